#include "qccl/algo/compression_stats.h"

namespace qccl::algo {

void CompressionStats::add(const StatsSnapshot& d) {
  std::lock_guard<std::mutex> lock(mutex_);
  totals_.calls += d.calls;
  totals_.tensors += d.tensors;
  totals_.compressedTensors += d.compressedTensors;
  totals_.logicalBytes += d.logicalBytes;
  totals_.wireBytes += d.wireBytes;
  totals_.nodeWireBytes += d.nodeWireBytes;
  totals_.exactWireBytes += d.exactWireBytes;
  totals_.encodeSeconds += d.encodeSeconds;
  totals_.communicateSeconds += d.communicateSeconds;
  totals_.decodeSeconds += d.decodeSeconds;
  for (size_t i = 0; i < d.tensorsByRoute.size(); ++i) {
    totals_.tensorsByRoute[i] += d.tensorsByRoute[i];
  }
}

StatsSnapshot CompressionStats::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return totals_;
}

void CompressionStats::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  totals_ = StatsSnapshot{};
}

} // namespace qccl::algo
