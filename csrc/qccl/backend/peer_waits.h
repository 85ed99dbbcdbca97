#pragma once

// How long this rank's cross-rank checks waited for each peer (qccl.stats()["peer_waits"],
// qccl.straggler_report): the numbers the check already has, since every collective's
// check waits for every peer's record of the same call. A peer whose record comes late
// reached that call late.
//
// A check waits for its peers in rank order, and a wait is the time it was blocked on
// that peer: a peer already there costs nothing, so the rank that arrived last is the
// one the wait is counted for (an earlier late peer gets the part of the wait before it
// arrived). The sum over peers is the time the check waited in all.
//
// Per peer: how many checks, the total and the longest wait, and a histogram of the waits
// (four buckets per doubling from 1 us, so a median or tail read off it is within 19%),
// which Python merges across ranks.

#include <cstdint>
#include <mutex>
#include <vector>

namespace qccl {

class PeerWaits {
 public:
  // Bucket 0 holds waits under 1 us; bucket b > 0 those in [2^((b-1)/4), 2^(b/4)) us; the
  // last one everything longer (about 4.6 minutes).
  static constexpr int kBucketsPerDoubling = 4;
  static constexpr int kBuckets = 1 + kBucketsPerDoubling * 28;

  struct Peer {
    int64_t checks = 0;
    int64_t totalNs = 0;
    int64_t longestNs = 0;
    std::vector<int64_t> histogram = std::vector<int64_t>(kBuckets, 0);
  };

  explicit PeerWaits(int size) : peers_(size) {}

  // One check's wait per peer (this rank's own entry is ignored).
  void add(int self, const std::vector<int64_t>& waitedNs);
  std::vector<Peer> snapshot() const;
  void reset();

  static int bucketOf(int64_t ns);

 private:
  mutable std::mutex mutex_;  // the worker adds, Python reads
  std::vector<Peer> peers_;
};

} // namespace qccl
