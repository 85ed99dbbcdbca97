#pragma once

// Counters of a group's allreduces, for qccl.stats(): what went compressed, what went
// exact and why, bytes and where the time went. Written by the group's worker thread,
// read from any thread.

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>

#include "qccl/algo/route.h"

namespace qccl::algo {

struct StatsSnapshot {
  int64_t calls = 0;              // allreduce calls (a coalesced call counts once)
  int64_t tensors = 0;            // tensors reduced
  int64_t compressedTensors = 0;
  int64_t logicalBytes = 0;       // bytes of the tensors reduced
  int64_t wireBytes = 0;          // bytes this rank sent
  int64_t nodeWireBytes = 0;      // of which to ranks of its own node (hierarchical only)
  int64_t exactWireBytes = 0;     // what it would have sent with every tensor exact
  double encodeSeconds = 0;
  double communicateSeconds = 0;  // waiting for the network
  double decodeSeconds = 0;       // decoding and summing
  std::array<int64_t, static_cast<size_t>(Route::kCount)> tensorsByRoute{};
};

class CompressionStats {
 public:
  void add(const StatsSnapshot& delta);
  StatsSnapshot snapshot() const;
  void reset();

 private:
  mutable std::mutex mutex_;
  StatsSnapshot totals_;
};

} // namespace qccl::algo
