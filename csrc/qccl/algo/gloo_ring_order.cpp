#include "qccl/algo/gloo_ring_order.h"

#include <algorithm>

#include <ATen/ops/from_blob.h>

#include "qccl/algo/reduce_lowering.h"

namespace qccl::algo {
namespace {

constexpr int64_t kMaxSegmentBytes = 1 << 20;  // gloo's kMaxSegmentSize (allreduce.h, reduce.h)

int64_t ceilDiv(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

int64_t roundUp(int64_t value, int64_t multiple) {
  return ceilDiv(value, multiple) * multiple;
}

// `length` bytes at `data`, read as elements of `dtype` (no copy).
at::Tensor viewOf(const uint8_t* data, int64_t length, at::ScalarType dtype) {
  return at::from_blob(
      const_cast<uint8_t*>(data), {length / static_cast<int64_t>(c10::elementSize(dtype))},
      at::TensorOptions().dtype(dtype));
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

void reduceInGlooOrder(
    c10d::ReduceOp::RedOpType op,
    at::ScalarType type,
    uint8_t* into,
    int64_t firstElement,
    int64_t length,
    const std::vector<const uint8_t*>& fromRank,
    int64_t chunkElements) {
  const int size = static_cast<int>(fromRank.size());
  const int64_t elementSize = static_cast<int64_t>(c10::elementSize(type));
  const int64_t end = firstElement + length / elementSize;
  // Each of Gloo's chunks that this piece overlaps has its own order of ranks.
  for (int64_t from = firstElement; from < end;) {
    const int64_t chunk = from / chunkElements;
    const int64_t to = std::min(end, (chunk + 1) * chunkElements);
    const int64_t skip = (from - firstElement) * elementSize;
    const int64_t span = (to - from) * elementSize;
    auto acc = viewOf(into + skip, span, type);
    acc.copy_(viewOf(fromRank[glooRingRank(chunk, 0, size)] + skip, span, type));
    for (int k = 1; k < size; ++k) {
      reduceInto(op, acc, viewOf(fromRank[glooRingRank(chunk, k, size)] + skip, span, type));
    }
    from = to;
  }
}

} // namespace qccl::algo
