/* delayline: a fixed one-way delay for every packet routed into a TUN device.
 *
 *   delayline DEVICE DELAY_MS BUFFER_BYTES
 *
 * Attaches to the (persistent) TUN device DEVICE, reads each packet the kernel routes
 * into it, holds it for DELAY_MS and writes it back, so the kernel forwards it on by its
 * routing table. benchmarks/netlab runs it in its router namespace, because this kernel
 * has no netem. Packets leave in the order they came (a FIFO whose release time is the
 * arrival time plus the delay), so the delay adds no reordering and no jitter of its own.
 *
 * One thread has to keep up with every rank's traffic at once, so the device is opened
 * with IFF_VNET_HDR and TSO offloads: the kernel hands over whole 64 KiB GSO packets
 * (with a virtio-net header saying how to segment them) instead of 1500-byte frames, and
 * gets them back unchanged. BUFFER_BYTES bounds the packets held at once; when it is full
 * the delay line stops reading and the device's own queue takes the overflow (and drops,
 * as a full router queue would).
 *
 * Prints "ready" on stdout once it is attached, then nothing more on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

/* The largest read: a 10-byte virtio-net header and an IPv4 packet of at most 64 KiB
 * (the device keeps the legacy 64 KiB GSO limit, so no BIG TCP packets arrive). */
#define MAX_PACKET (10 + 65536)
#define READ_BATCH 64 /* reads between two looks at the release queue */

struct record {
    uint64_t release_ns;
    uint32_t length;
    uint32_t unused;
    unsigned char data[];
};

static size_t record_size(size_t length) { return (sizeof(struct record) + length + 7) & ~(size_t)7; }
#define MAX_RECORD record_size(MAX_PACKET)

/* A byte ring of variable-length records, oldest at `head`. Records never straddle the
 * end: when the space left at the top is too small, writing resumes at offset 0 and
 * `top` remembers where the records before the wrap end. */
static struct {
    unsigned char *bytes;
    size_t capacity, head, tail, top, count;
    int wrapped;
} ring;

static struct record *reserve(void) {
    if (ring.count == 0) ring.head = ring.tail = 0, ring.wrapped = 0;
    if (ring.wrapped) return ring.head - ring.tail >= MAX_RECORD ? (struct record *)(ring.bytes + ring.tail) : NULL;
    if (ring.capacity - ring.tail >= MAX_RECORD) return (struct record *)(ring.bytes + ring.tail);
    if (ring.head <= MAX_RECORD) return NULL; /* keep tail < head after wrapping */
    ring.top = ring.tail;
    ring.tail = 0;
    ring.wrapped = 1;
    return (struct record *)ring.bytes;
}

static void commit(struct record *r) {
    ring.tail += record_size(r->length);
    ring.count++;
}

static struct record *oldest(void) { return ring.count ? (struct record *)(ring.bytes + ring.head) : NULL; }

static void pop(void) {
    ring.head += record_size(oldest()->length);
    ring.count--;
    if (ring.wrapped && ring.head == ring.top) ring.head = 0, ring.wrapped = 0;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "delayline: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int attach(const char *device) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("open /dev/net/tun");
    struct ifreq request;
    memset(&request, 0, sizeof request);
    request.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(request.ifr_name, IFNAMSIZ, "%s", device);
    if (ioctl(fd, TUNSETIFF, &request) < 0) die("attach to the TUN device");
    /* Whole GSO packets with the checksum left to the kernel: one read per 64 KiB. */
    if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) < 0) die("set TSO offloads");
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: delayline DEVICE DELAY_MS BUFFER_BYTES\n");
        return 2;
    }
    double delay_ms = strtod(argv[2], NULL);
    ring.capacity = strtoull(argv[3], NULL, 10);
    if (delay_ms < 0 || ring.capacity < 4 * MAX_RECORD) {
        fprintf(stderr, "delayline: need DELAY_MS >= 0 and BUFFER_BYTES >= %zu\n", 4 * MAX_RECORD);
        return 2;
    }
    uint64_t delay_ns = (uint64_t)(delay_ms * 1e6);
    /* Die with netlab even when it is killed before its trap can run. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    /* Wake at the release time, not up to 50 us later (the default timer slack). */
    prctl(PR_SET_TIMERSLACK, 1UL);
    /* A wire's latency does not grow when the hosts are busy: run before the ranks
     * (best effort; it sleeps whenever no packet is due, so it only takes what the
     * packets cost). */
    struct sched_param priority = {.sched_priority = 10};
    sched_setscheduler(0, SCHED_FIFO, &priority);
    if (!(ring.bytes = malloc(ring.capacity))) die("allocate the buffer");
    int fd = attach(argv[1]);
    printf("ready\n");
    fflush(stdout);
    int devnull = open("/dev/null", O_WRONLY); /* the reader of "ready" goes away */
    if (devnull >= 0) dup2(devnull, STDOUT_FILENO), close(devnull);

    unsigned long long dropped_writes = 0;
    for (;;) {
        uint64_t now = now_ns();
        for (struct record *r; (r = oldest()) && r->release_ns <= now; pop()) {
            if (write(fd, r->data, r->length) < 0 && errno != EINTR) {
                /* A packet the kernel refuses (say, its route went away) is lost, like on
                 * a real link; report the first, so a broken lab is not silent. */
                if (dropped_writes++ == 0) fprintf(stderr, "delayline: write: %s (dropping)\n", strerror(errno));
            }
        }
        int full = 0, drained = 0;
        for (int n = 0; n < READ_BATCH; n++) {
            struct record *r = reserve();
            if (!r) { full = 1; break; } /* the device queue holds the rest until a release */
            ssize_t length = read(fd, r->data, MAX_PACKET);
            if (length < 0) {
                if (errno == EAGAIN) { drained = 1; break; }
                if (errno == EINTR) continue;
                die("read");
            }
            r->release_ns = now_ns() + delay_ns;
            r->length = (uint32_t)length;
            commit(r);
        }
        if (!full && !drained) continue; /* a whole batch came: more may be waiting */

        /* Sleep until the next release, or a packet arrives while there is room for it. */
        struct pollfd wait = {.fd = fd, .events = full ? 0 : POLLIN};
        struct record *next = oldest();
        if (!next) {
            if (ppoll(&wait, 1, NULL, NULL) < 0 && errno != EINTR) die("poll");
            continue;
        }
        uint64_t now_again = now_ns();
        if (next->release_ns <= now_again) continue;
        uint64_t left = next->release_ns - now_again;
        struct timespec timeout = {.tv_sec = (time_t)(left / 1000000000u), .tv_nsec = (long)(left % 1000000000u)};
        if (ppoll(&wait, 1, &timeout, NULL) < 0 && errno != EINTR) die("poll");
    }
}
