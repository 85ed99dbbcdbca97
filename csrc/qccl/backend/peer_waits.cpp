#include "qccl/backend/peer_waits.h"

#include <algorithm>
#include <cmath>

namespace qccl {

int PeerWaits::bucketOf(int64_t ns) {
  if (ns < 1000) {
    return 0;
  }
  const double doublings = std::log2(static_cast<double>(ns) / 1000.0);
  return std::min(kBuckets - 1, 1 + static_cast<int>(doublings * kBucketsPerDoubling));
}

void PeerWaits::add(int self, const std::vector<int64_t>& waitedNs) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t peer = 0; peer < waitedNs.size() && peer < peers_.size(); ++peer) {
    if (static_cast<int>(peer) == self) {
      continue;
    }
    auto& p = peers_[peer];
    const int64_t ns = waitedNs[peer];
    p.checks += 1;
    p.totalNs += ns;
    p.longestNs = std::max(p.longestNs, ns);
    p.histogram[bucketOf(ns)] += 1;
  }
}

std::vector<PeerWaits::Peer> PeerWaits::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peers_;
}

void PeerWaits::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& p : peers_) {
    p = Peer{};
  }
}

} // namespace qccl
