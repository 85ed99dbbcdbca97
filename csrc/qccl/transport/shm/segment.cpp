#include "qccl/transport/shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <utility>

#include "qccl/common/errors.h"

namespace qccl::shm {
namespace {

constexpr const char* kPrefix = "/qccl-";

std::string systemError(const std::string& what, const std::string& name, int error) {
  return "shared memory: " + what + "(" + name + ") failed: " + std::strerror(error);
}

// Unguessable by other users: 64 bits from the kernel's random source (random_device
// reads getrandom or /dev/urandom on Linux), beside the pid that keeps a process's names
// apart from every other live process's.
std::string freshName() {
  std::random_device device;
  const uint64_t bits = (static_cast<uint64_t>(device()) << 32) ^ device();
  char name[64];
  std::snprintf(name, sizeof(name), "%s%d-%016" PRIx64, kPrefix, static_cast<int>(getpid()), bits);
  return name;
}

uint8_t* mapShared(int fd, uint64_t bytes, const std::string& name) {
  void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) {
    const int error = errno;
    close(fd);
    throwCommError(systemError("mmap", name, error));
  }
  close(fd); // the mapping keeps the memory; no descriptor is left to leak into children
  // A forked child (a DataLoader worker) never uses the channel: it should not keep the
  // memory alive after the ranks are gone.
  madvise(data, bytes, MADV_DONTFORK);
  return static_cast<uint8_t*>(data);
}

} // namespace

SegmentTooLarge::SegmentTooLarge(uint64_t neededBytes, uint64_t freeBytes)
    : std::runtime_error(
          "qccl: /dev/shm has " + std::to_string(freeBytes) + " bytes free, a shared-memory segment needs " +
          std::to_string(neededBytes) + " bytes (a container's /dev/shm is 64 MiB unless raised, e.g. with " +
          "docker run --shm-size)"),
      neededBytes_(neededBytes),
      freeBytes_(freeBytes) {}

std::optional<uint64_t> shmFreeBytes() {
  struct statvfs info {};
  if (statvfs("/dev/shm", &info) != 0 || info.f_blocks == 0) {
    return std::nullopt; // tmpfs with size=0 reports no blocks: it has no limit
  }
  return static_cast<uint64_t>(info.f_bavail) * info.f_frsize;
}

void checkSegmentFits(uint64_t neededBytes, std::optional<uint64_t> freeBytes) {
  if (freeBytes && neededBytes > *freeBytes) {
    throw SegmentTooLarge(neededBytes, *freeBytes);
  }
}

Segment Segment::create(uint64_t bytes, std::optional<uint64_t> assumeFreeBytes) {
  QCCL_CHECK_VALUE(
      bytes > 0 && bytes <= static_cast<uint64_t>(std::numeric_limits<off_t>::max()),
      "shared-memory segment of ",
      bytes,
      " bytes");
  checkSegmentFits(bytes, assumeFreeBytes ? assumeFreeBytes : shmFreeBytes());

  std::string name;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    name = freshName();
    fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && !(errno == EEXIST && attempt < 3)) {
      throwCommError(systemError("shm_open", name, errno));
    }
  }
  // From here on the name exists: every failure removes it before throwing.
  auto fail = [&](int error, const std::string& what) {
    close(fd);
    shm_unlink(name.c_str());
    if (error == ENOSPC) {
      throw SegmentTooLarge(bytes, shmFreeBytes().value_or(0));
    }
    throwCommError(systemError(what, name, error));
  };
  if (fchmod(fd, 0600) != 0) { // the umask may have cleared the owner's bits
    fail(errno, "fchmod");
  }
  // Reserve every page now: on a full tmpfs ftruncate would succeed and the first write
  // to a missing page would raise SIGBUS. tmpfs interrupts long reservations on signals.
  int error;
  do {
    error = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  } while (error == EINTR);
  if (error != 0) {
    fail(error, "posix_fallocate");
  }
  return Segment(name, mapShared(fd, bytes, name), bytes, /*owner=*/true);
}

Segment Segment::open(const std::string& name, uint64_t bytes) {
  QCCL_CHECK_VALUE(
      name.rfind(kPrefix, 0) == 0 && name.find('/', 1) == std::string::npos,
      "'",
      name,
      "' is not a qccl shared-memory segment name");
  const int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    throwCommError(systemError("shm_open", name, errno));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    close(fd);
    throwCommError(systemError("fstat", name, error));
  }
  if (static_cast<uint64_t>(st.st_size) != bytes || st.st_uid != geteuid()) {
    close(fd);
    throwCommError(
        "shared memory: segment " + name + " has " + std::to_string(st.st_size) + " bytes and owner " +
        std::to_string(st.st_uid) + ", expected " + std::to_string(bytes) + " bytes and owner " +
        std::to_string(geteuid()));
  }
  return Segment(name, mapShared(fd, bytes, name), bytes, /*owner=*/false);
}

Segment::Segment(std::string name, uint8_t* data, uint64_t bytes, bool owner)
    : name_(std::move(name)), data_(data), bytes_(bytes), owner_(owner) {}

Segment::Segment(Segment&& other) noexcept
    : name_(std::move(other.name_)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      owner_(std::exchange(other.owner_, false)),
      unlinked_(other.unlinked_) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    release();
    name_ = std::move(other.name_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    owner_ = std::exchange(other.owner_, false);
    unlinked_ = other.unlinked_;
  }
  return *this;
}

Segment::~Segment() {
  release();
}

void Segment::unlink() {
  if (owner_ && !unlinked_) {
    shm_unlink(name_.c_str());
    unlinked_ = true;
  }
}

void Segment::release() noexcept {
  unlink();
  if (data_ != nullptr) {
    munmap(data_, bytes_);
    data_ = nullptr;
  }
}

} // namespace qccl::shm
