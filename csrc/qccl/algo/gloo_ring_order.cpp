#include "qccl/algo/gloo_ring_order.h"

#include <algorithm>

namespace qccl::algo {
namespace {

constexpr int64_t kMaxSegmentBytes = 1 << 20;  // gloo's kMaxSegmentSize (allreduce.h, reduce.h)

int64_t ceilDiv(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

int64_t roundUp(int64_t value, int64_t multiple) {
  return ceilDiv(value, multiple) * multiple;
}

} // namespace

// Both rings cut the buffer into segments (at least two per rank, a multiple of the world
// size) and give each rank's chunk segments / size of them; they differ in how they size
// a segment.
int64_t glooAllreduceChunkElements(int64_t count, int64_t elementSize, int size) {
  const int64_t bytes = count * elementSize;
  if (bytes == 0) {
    return 1;
  }
  const int64_t maxSegment = elementSize * std::max<int64_t>(1, kMaxSegmentBytes / elementSize);
  const int64_t segments = roundUp(std::max(ceilDiv(bytes, maxSegment), int64_t{2} * size), size);
  const int64_t segmentBytes = roundUp(ceilDiv(bytes, segments), elementSize);
  return segments / size * segmentBytes / elementSize;
}

int64_t glooReduceChunkElements(int64_t count, int64_t elementSize, int size) {
  const int64_t bytes = count * elementSize;
  if (bytes == 0) {
    return 1;
  }
  const int64_t maxSegment = elementSize * (kMaxSegmentBytes / elementSize);
  const int64_t segmentBytes = roundUp(std::min(ceilDiv(bytes, int64_t{2} * size), maxSegment), elementSize);
  const int64_t segments = roundUp(std::max(ceilDiv(bytes, segmentBytes), int64_t{2} * size), size);
  return segments / size * segmentBytes / elementSize;
}

} // namespace qccl::algo
