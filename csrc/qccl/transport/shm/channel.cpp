#include "qccl/transport/shm/channel.h"

#include <unistd.h>

#include <new>

#include "qccl/common/errors.h"
#include "qccl/transport/shm/futex.h"

namespace qccl::shm {
namespace {

uint64_t checkedSegmentBytes(int rank, int size, uint64_t slotBytes) {
  QCCL_CHECK_VALUE(
      size >= 1 && rank >= 0 && rank < size && slotBytes > 0 && slotBytes <= (uint64_t{1} << 60),
      "shared-memory channel of rank ",
      rank,
      " of ",
      size,
      " with slots of ",
      slotBytes,
      " bytes");
  return segmentBytesFor(slotBytes);
}

} // namespace

Channel::Channel(int rank, int size, uint64_t slotBytes, std::chrono::milliseconds timeout)
    : rank_(rank),
      size_(size),
      slotBytes_(slotBytes),
      timeoutMs_(timeout.count()),
      own_(Segment::create(checkedSegmentBytes(rank, size, slotBytes))),
      peers_(size),
      headers_(size, nullptr),
      processes_(size),
      blockedNs_(size, 0) {
  // The segment is zero-filled (fresh tmpfs pages): counters, seq and flags start at 0.
  auto* header = new (own_.data()) SegmentHeader{};
  header->slotBytes = slotBytes;
  header->segmentBytes = own_.bytes();
  header->rank = rank;
  header->size = size;
  header->pid = static_cast<int32_t>(getpid());
  shared(header->magic).store(kSegmentMagic, std::memory_order_release); // last: complete
  headers_[rank] = header;
}

Channel::~Channel() {
  closeAndWakeAll();
}

void Channel::attach(const std::vector<std::string>& names) {
  if (aborted_.load()) {
    throwCommError("shared-memory setup on rank " + std::to_string(rank_) + ": attach() after abort()");
  }
  QCCL_CHECK_VALUE(!attached_.load(), "shared-memory channel of rank ", rank_, " is attached already");
  QCCL_CHECK_VALUE(
      names.size() == static_cast<size_t>(size_) && names[rank_] == myName(),
      "shared-memory channel of rank ",
      rank_,
      ": attach() takes every rank's segment name in rank order (",
      names.size(),
      " names for ",
      size_,
      " ranks)");
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) {
      continue;
    }
    Segment segment = Segment::open(names[peer], segmentBytesFor(slotBytes_));
    auto* header = reinterpret_cast<SegmentHeader*>(segment.data());
    const uint64_t magic = shared(header->magic).load(std::memory_order_acquire);
    if (magic != kSegmentMagic || header->rank != peer || header->size != size_ || header->slotBytes != slotBytes_ ||
        header->pid <= 0) {
      throwCommError(
          "shared-memory setup on rank " + std::to_string(rank_) + ": segment " + names[peer] + " of rank " +
          std::to_string(peer) + " describes rank " + std::to_string(header->rank) + " of " +
          std::to_string(header->size) + " with slots of " + std::to_string(header->slotBytes) +
          " bytes, expected rank " + std::to_string(peer) + " of " + std::to_string(size_) + " with slots of " +
          std::to_string(slotBytes_) + " bytes" + (magic != kSegmentMagic ? " (no qccl channel header)" : ""));
    }
    processes_[peer] = PeerProcess(header->pid);
    peers_[peer] = std::move(segment);
    headers_[peer] = header;
  }
  // Counted only once every peer is mapped, so that unlinkOwn's wait means "all mapped".
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) {
      shared(headers_[peer]->attached).fetch_add(1, std::memory_order_release);
      notifyChange(headers_[peer]->seq, headers_[peer]->waiters);
    }
  }
  attached_.store(true);
}

void Channel::unlinkOwn() {
  checkUsable("unlinkOwn", 0);
  waitAtLeast(rank_, headers_[rank_]->attached, size_ - 1, Waiting{"setup", 0, -1, "map this rank's segment", 0});
  own_.unlink();
}

uint8_t* Channel::slot(int owner, uint64_t round) const {
  return reinterpret_cast<uint8_t*>(headers_[owner]) + kPageBytes + (round % 2) * slotStride(slotBytes_);
}

uint8_t* Channel::beginWrite(uint64_t round) {
  checkUsable("beginWrite", round);
  QCCL_CHECK_VALUE(
      round == published_ + 1 && round == finished_ + 1,
      "shared-memory channel of rank ",
      rank_,
      ": beginWrite(",
      round,
      ") after round ",
      published_,
      " was published and round ",
      finished_,
      " finished");
  if (round > 2) { // the slot's previous round: every reader must be done with it
    for (int peer = 0; peer < size_; ++peer) {
      if (peer != rank_) {
        waitAtLeast(peer, headers_[peer]->finished, round - 2, Waiting{"round", round, peer, "finish", round - 2});
      }
    }
  }
  return slot(rank_, round);
}

void Channel::publish(uint64_t round, uint64_t bytes) {
  checkUsable("publish", round);
  QCCL_CHECK_VALUE(
      round == published_ + 1 && bytes <= slotBytes_,
      "shared-memory channel of rank ",
      rank_,
      ": publish(",
      round,
      ", ",
      bytes,
      " bytes) after round ",
      published_,
      ", with slots of ",
      slotBytes_,
      " bytes");
  SegmentHeader& header = *headers_[rank_];
  shared(header.published).store(round, std::memory_order_release); // the slot's bytes first
  notifyChange(header.seq, header.waiters);
  published_ = round;
  bytesPublished_.fetch_add(bytes, std::memory_order_relaxed);
}

const uint8_t* Channel::awaitPeer(int peer, uint64_t round) {
  // A round the peer already published is read even after abort(): a peer that finished
  // the call may abort right after (torchft aborts a quorum's group as it moves on), and
  // this rank's call is as complete as the peer's.
  const bool published = peer >= 0 && peer < size_ && peer != rank_ && attached_.load() &&
      shared(headers_[peer]->published).load(std::memory_order_acquire) >= round;
  if (!published) {
    checkUsable("awaitPeer", round);
  }
  QCCL_CHECK_VALUE(
      peer >= 0 && peer < size_ && round == finished_ + 1 && (peer != rank_ || round <= published_),
      "shared-memory channel of rank ",
      rank_,
      ": awaitPeer(",
      peer,
      ", ",
      round,
      ") of ",
      size_,
      " ranks, in round ",
      finished_ + 1,
      ", after publishing round ",
      published_);
  if (peer != rank_ && shared(headers_[peer]->published).load(std::memory_order_acquire) < round) {
    const auto start = std::chrono::steady_clock::now();
    waitAtLeast(peer, headers_[peer]->published, round, Waiting{"round", round, peer, "publish", round});
    blockedNs_[peer] += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  }
  return slot(peer, round);
}

void Channel::finish(uint64_t round) {
  if (aborted_.load() && failure_.empty()) {
    return;  // the round's data was read; no later round can start on this channel
  }
  checkUsable("finish", round);
  QCCL_CHECK_VALUE(
      round == finished_ + 1 && round <= published_,
      "shared-memory channel of rank ",
      rank_,
      ": finish(",
      round,
      ") after finishing round ",
      finished_,
      " and publishing round ",
      published_);
  SegmentHeader& header = *headers_[rank_];
  shared(header.finished).store(round, std::memory_order_release); // after our last read of peers' slots
  notifyChange(header.seq, header.waiters);
  finished_ = round;
}

void Channel::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(abortMutex_);
    if (abortReason_.empty()) {
      abortReason_ = why;
    }
  }
  aborted_.store(true, std::memory_order_seq_cst);
  closeAndWakeAll();
}

// Marks this rank's header closed and wakes every sleeper on every header we map: our own
// waits (which then see aborted_ or failure_) and the peers' (which then see `closed`).
// The seq bump makes sure a waiter about to sleep on an old value does not.
void Channel::closeAndWakeAll() {
  if (headers_[rank_] == nullptr) {
    return;
  }
  shared(headers_[rank_]->closed).store(1, std::memory_order_seq_cst);
  const int mapped = attached_.load() ? size_ : 1;
  for (int owner = 0; owner < mapped; ++owner) {
    SegmentHeader* header = attached_.load() ? headers_[owner] : headers_[rank_];
    shared(header->seq).fetch_add(1, std::memory_order_seq_cst);
    futexWakeAll(&header->seq);
  }
}

} // namespace qccl::shm
