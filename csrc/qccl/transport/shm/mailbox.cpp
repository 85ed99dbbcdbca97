#include "qccl/transport/shm/mailbox.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "qccl/common/errors.h"
#include "qccl/transport/shm/futex.h"
#include "qccl/transport/shm/segment_header.h"

namespace qccl::shm {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMailboxMagic = 0x716363'6c6d'6278'31ULL;  // "qcclmbx1"
constexpr uint64_t kStatusSlots = 16;
// As Channel's waits (channel_wait.cpp says why these values).
constexpr auto kSpin = std::chrono::microseconds(5);
constexpr auto kSleepSlice = std::chrono::milliseconds(20);

struct MailboxHeader {
  uint64_t magic;  // written last, before the name is shared
  uint64_t ringBytes;
  int32_t rank;
  int32_t size;
  int32_t pid;
  uint32_t closed;  // nonzero: the owner aborted or went away
  alignas(64) uint64_t attached;  // peers that have mapped this segment
  uint32_t attachSeq;
  uint32_t attachWaiters;
};

uint64_t ringStride(uint64_t ringBytes) {
  return (ringBytes + kPageBytes - 1) / kPageBytes * kPageBytes;
}

} // namespace

// A rank's block for one peer, on a page of its own.
struct Mailbox::Pair {
  // This rank writing to the peer: what it wrote, and the word the peer sleeps on.
  alignas(64) uint64_t written;
  uint64_t statusWritten;
  uint32_t dataSeq;
  uint32_t dataWaiters;
  // This rank reading the peer: what it read, and the word the peer sleeps on for room.
  alignas(64) uint64_t read;
  uint64_t statusRead;
  uint32_t roomSeq;
  uint32_t roomWaiters;
  alignas(64) uint8_t status[kStatusSlots][kStatusBytes];
};
static_assert(sizeof(MailboxHeader) <= kPageBytes);

namespace {
uint64_t segmentBytes(int size, uint64_t ringBytes) {
  return kPageBytes + static_cast<uint64_t>(size) * (kPageBytes + ringStride(ringBytes));
}
MailboxHeader& headerOf(uint8_t* base) {
  return *reinterpret_cast<MailboxHeader*>(base);
}
} // namespace

Mailbox::Mailbox(int rank, int size, uint64_t ringBytes)
    : rank_(rank),
      size_(size),
      ringBytes_(ringBytes),
      own_(Segment::create(segmentBytes(size, ringBytes))),
      peers_(size),
      bases_(size, nullptr),
      processes_(size) {
  static_assert(sizeof(Pair) <= kPageBytes, "a pair's block fits its page");
  bases_[rank_] = own_.data();
  auto& header = headerOf(own_.data());
  header.ringBytes = ringBytes;
  header.rank = rank;
  header.size = size;
  header.pid = static_cast<int32_t>(getpid());
  shared(header.magic).store(kMailboxMagic, std::memory_order_release);
}

Mailbox::~Mailbox() {
  abort();  // wakes the peers' waits on this rank: they see it closed
}

void Mailbox::attach(const std::vector<std::string>& names) {
  QCCL_CHECK_VALUE(names.size() == static_cast<size_t>(size_) && names[rank_] == myName(),
                   "shared-memory mailbox of rank ", rank_, ": attach() takes every rank's segment name in rank order");
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) {
      continue;
    }
    Segment segment = Segment::open(names[peer], segmentBytes(size_, ringBytes_));
    auto& header = headerOf(segment.data());
    if (shared(header.magic).load(std::memory_order_acquire) != kMailboxMagic || header.rank != peer ||
        header.size != size_ || header.ringBytes != ringBytes_ || header.pid <= 0) {
      throwCommError("shared-memory setup on rank " + std::to_string(rank_) + ": segment " + names[peer] +
                     " is not rank " + std::to_string(peer) + "'s point-to-point mailbox");
    }
    processes_[peer] = PeerProcess(header.pid);
    bases_[peer] = segment.data();
    peers_[peer] = std::move(segment);
  }
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) {
      auto& header = headerOf(bases_[peer]);
      shared(header.attached).fetch_add(1, std::memory_order_release);
      notifyChange(header.attachSeq, header.attachWaiters);
    }
  }
}

void Mailbox::unlinkOwn(std::chrono::milliseconds timeout) {
  auto& header = headerOf(own_.data());
  waitFor([&] { return shared(header.attached).load(std::memory_order_acquire) >= static_cast<uint64_t>(size_ - 1); },
          header.attachSeq, header.attachWaiters, -1, "wait for every rank to map its mailbox",
          Clock::now() + timeout, false);
  own_.unlink();
}

Mailbox::Pair& Mailbox::mine(int peer) const {
  return *reinterpret_cast<Pair*>(bases_[rank_] + kPageBytes * (1 + peer));
}

Mailbox::Pair& Mailbox::theirs(int peer) const {
  return *reinterpret_cast<Pair*>(bases_[peer] + kPageBytes * (1 + rank_));
}

uint8_t* Mailbox::ring(int owner, int peer) const {
  return bases_[owner] + kPageBytes * (1 + size_) + peer * ringStride(ringBytes_);
}

bool Mailbox::gone(int peer) const {
  if (peer < 0) {
    return false;
  }
  return shared(headerOf(bases_[peer]).closed).load(std::memory_order_acquire) != 0 || !processes_[peer].alive();
}

void Mailbox::fail(int peer, const std::string& what, const std::string& why) const {
  throwCommError("qccl: shared-memory point-to-point on rank " + std::to_string(rank_) + ": " + what +
                 (peer >= 0 ? " (rank " + std::to_string(peer) + ")" : std::string()) + ": " + why);
}

template <typename Ready>
bool Mailbox::waitFor(Ready ready, uint32_t& seq, uint32_t& waiters, int peer, const char* what,
                      Clock::time_point deadline, bool mayGiveUp) {
  const auto start = Clock::now();
  for (uint32_t spins = 0; Clock::now() - start < kSpin; ++spins) {
    if (ready()) {
      return true;
    }
    cpuRelax();
  }
  for (;;) {
    shared(waiters).fetch_add(1, std::memory_order_seq_cst);
    const uint32_t seen = shared(seq).load(std::memory_order_seq_cst);
    struct Uncount {
      uint32_t& waiters;
      ~Uncount() {
        shared(waiters).fetch_sub(1, std::memory_order_seq_cst);
      }
    } uncount{waiters};
    if (ready()) {
      return true;
    }
    if (aborted_.load()) {
      fail(peer, what, "aborted");
    }
    if (gone(peer)) {
      if (ready()) {  // what it wrote before it went away
        return true;
      }
      if (mayGiveUp) {
        return false;
      }
      fail(peer, what, "the peer went away (it died, or closed the process group)");
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      if (mayGiveUp) {
        return false;
      }
      fail(peer, what, "timed out");
    }
    futexWait(&seq, seen, std::min<Clock::duration>(kSleepSlice, deadline - now));
  }
}

void Mailbox::write(int peer, const void* data, uint64_t bytes, std::chrono::milliseconds timeout) {
  auto& out = mine(peer);
  auto& in = theirs(peer);
  const auto* from = static_cast<const uint8_t*>(data);
  uint8_t* base = ring(rank_, peer);
  uint64_t written = shared(out.written).load(std::memory_order_relaxed);
  if (aborted_.load() || shared(headerOf(bases_[peer]).closed).load(std::memory_order_acquire) != 0) {
    fail(peer, "a send", aborted_.load() ? "aborted" : "the peer closed its mailbox (it closed the process group)");
  }
  while (bytes > 0) {
    auto room = [&] { return ringBytes_ - (written - shared(in.read).load(std::memory_order_acquire)); };
    if (room() == 0) {
      waitFor([&] { return room() > 0; }, in.roomSeq, in.roomWaiters, peer, "a send waiting for room",
              Clock::now() + timeout, false);
    }
    const uint64_t at = written % ringBytes_;
    const uint64_t n = std::min({bytes, room(), ringBytes_ - at});
    std::memcpy(base + at, from, n);
    written += n;
    from += n;
    bytes -= n;
    shared(out.written).store(written, std::memory_order_release);
    notifyChange(out.dataSeq, out.dataWaiters);
    bytesWritten_.fetch_add(n, std::memory_order_relaxed);
  }
}

void Mailbox::postStatus(int peer, const void* record) {
  auto& out = mine(peer);
  const uint64_t written = shared(out.statusWritten).load(std::memory_order_relaxed);
  if (written - shared(theirs(peer).statusRead).load(std::memory_order_acquire) >= kStatusSlots) {
    fail(peer, "a status record", "the peer has not read the last " + std::to_string(kStatusSlots));
  }
  std::memcpy(out.status[written % kStatusSlots], record, kStatusBytes);
  shared(out.statusWritten).store(written + 1, std::memory_order_release);
  notifyChange(out.dataSeq, out.dataWaiters);
}

bool Mailbox::ready(int peer) const {
  auto& in = theirs(peer);
  auto& own = mine(peer);
  return shared(in.written).load(std::memory_order_acquire) > shared(own.read).load(std::memory_order_relaxed) ||
      shared(in.statusWritten).load(std::memory_order_acquire) > shared(own.statusRead).load(std::memory_order_relaxed);
}

bool Mailbox::awaitFrom(int peer, Clock::time_point until, const std::function<bool()>& stop) {
  auto& in = theirs(peer);
  return waitFor([&] { return ready(peer) || (stop && stop()); }, in.dataSeq, in.dataWaiters, peer,
                 "a receive waiting for a message", until, true);
}

void Mailbox::wakeReceivers(int peer) {
  // The word lives in the peer's segment; bumping it makes a sleeper that is just about
  // to sleep on the old value return at once (futex.h).
  auto& in = theirs(peer);
  shared(in.dataSeq).fetch_add(1, std::memory_order_seq_cst);
  futexWakeAll(&in.dataSeq);
}

bool Mailbox::takeStatus(int peer, void* record) {
  auto& in = theirs(peer);
  auto& own = mine(peer);
  const uint64_t read = shared(own.statusRead).load(std::memory_order_relaxed);
  if (shared(in.statusWritten).load(std::memory_order_acquire) <= read) {
    return false;
  }
  std::memcpy(record, in.status[read % kStatusSlots], kStatusBytes);
  shared(own.statusRead).store(read + 1, std::memory_order_release);
  return true;
}

void Mailbox::read(int peer, void* into, uint64_t bytes) {
  auto& in = theirs(peer);
  auto& own = mine(peer);
  auto* to = static_cast<uint8_t*>(into);
  const uint8_t* base = ring(peer, rank_);
  uint64_t read = shared(own.read).load(std::memory_order_relaxed);
  while (bytes > 0) {
    auto available = [&] { return shared(in.written).load(std::memory_order_acquire) - read; };
    if (available() == 0) {
      waitFor([&] { return available() > 0; }, in.dataSeq, in.dataWaiters, peer, "a receive waiting for the rest of a message",
              Clock::time_point::max(), false);
    }
    const uint64_t at = read % ringBytes_;
    const uint64_t n = std::min({bytes, available(), ringBytes_ - at});
    std::memcpy(to, base + at, n);
    read += n;
    to += n;
    bytes -= n;
    shared(own.read).store(read, std::memory_order_release);
    notifyChange(own.roomSeq, own.roomWaiters);
  }
}

void Mailbox::abort() {
  if (aborted_.exchange(true)) {
    return;
  }
  shared(headerOf(own_.data()).closed).store(1, std::memory_order_release);
  // Wake everyone who sleeps on this rank's words: its readers and writers see it closed.
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) {
      auto& pair = mine(peer);
      shared(pair.dataSeq).fetch_add(1);
      futexWakeAll(&pair.dataSeq);
      shared(pair.roomSeq).fetch_add(1);
      futexWakeAll(&pair.roomSeq);
    }
  }
  // And this rank's own sleepers on the peers' words (they check aborted_ between sleeps).
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_ && bases_[peer]) {
      auto& pair = theirs(peer);
      futexWakeAll(&pair.dataSeq);
      futexWakeAll(&pair.roomSeq);
    }
  }
}

} // namespace qccl::shm
