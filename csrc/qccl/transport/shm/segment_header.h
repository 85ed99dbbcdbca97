#pragma once

// The layout of a channel's segment, shared by every process that maps it:
//
//   [0, 4096)                  SegmentHeader
//   [4096, 4096 + stride)      slot 0 (odd rounds use slot 1, even rounds slot 0)
//   [4096 + stride, + stride)  slot 1
//
// stride is slotBytes rounded up to a page, so slots start page-aligned (copies run at
// full speed, and a slot's pages are touched first by its owner: its NUMA node).
//
// Only the owner writes its counters; peers write the wake-up words (seq, waiters) and
// `attached`. Every shared word is accessed through std::atomic_ref, which is address-
// free (and so valid across processes) because it is lock-free.

#include <atomic>
#include <cstdint>

namespace qccl::shm {

inline constexpr uint64_t kSegmentMagic = 0x716363'6c73'686d'31ULL; // "qcclshm1"
inline constexpr uint64_t kPageBytes = 4096;

static_assert(std::atomic_ref<uint64_t>::is_always_lock_free, "cross-process counters need lock-free atomics");
static_assert(std::atomic_ref<uint32_t>::is_always_lock_free, "cross-process futex words need lock-free atomics");

struct SegmentHeader {
  // Written once by the owner before the name is shared; magic last (release).
  uint64_t magic;
  uint64_t slotBytes;
  uint64_t segmentBytes;
  int32_t rank;
  int32_t size;
  int32_t pid;

  // The owner's progress: the last round it published, and the last it finished (it
  // reads no peer slot of that round any more). Round numbers, never flags: a flag
  // cannot tell round k from k + 2.
  alignas(64) uint64_t published;
  uint64_t finished;

  // Wake-ups, on a line of their own since every rank writes them. seq changes on every
  // change of this header's counters; sleepers FUTEX_WAIT on it, and a writer calls
  // FUTEX_WAKE only when `waiters` says someone sleeps.
  alignas(64) uint32_t seq;
  uint32_t waiters;
  uint32_t closed; // nonzero: the owner aborted, failed or went away; waits on it fail
  uint32_t padding;
  uint64_t attached; // peers that have mapped this segment (the owner may then unlink it)
};

static_assert(sizeof(SegmentHeader) <= kPageBytes);

inline uint64_t slotStride(uint64_t slotBytes) {
  return (slotBytes + kPageBytes - 1) / kPageBytes * kPageBytes;
}

inline uint64_t segmentBytesFor(uint64_t slotBytes) {
  return kPageBytes + 2 * slotStride(slotBytes);
}

template <typename T>
std::atomic_ref<T> shared(T& word) {
  return std::atomic_ref<T>(word);
}

} // namespace qccl::shm
