#pragma once

// The order in which Gloo's ring combines each element's contributions (ProcessGroupGloo
// on CPU tensors in torch 2.15: all_reduce runs gloo::allreduce's ring with 1 MiB
// segments, reduce runs gloo::reduce's ring, reduce_scatter_tensor all-reduces the whole
// input and keeps its block). qccl reduces in this order wherever it holds every rank's
// contribution itself (shared memory, algo/one_host.h), so its results are Gloo's to the
// bit at any world size.
//
// The buffer is cut into `size` chunks of `chunkElements` (the last ones short or
// empty). Chunk c starts at rank c - 1 and travels the ring downwards: its elements are
//   x[c] + (x[c+1] + (... + (x[c-2] + x[c-1])))      (ranks mod size)
// each addition rounded to the element type (float16 and bfloat16: computed in float,
// rounded after every step). Addition commutes bit for bit, so qccl computes
//   (((x[c-1] + x[c-2]) + x[c-3]) + ... ) + x[c].
// Checked against real Gloo groups at 2 to 8 ranks, float32/64, float16, bfloat16, sizes
// 1 to 32M elements (4068 cases, bit for bit); a plain rank-order sum differs in most.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

namespace qccl::algo {

// Elements per chunk of gloo::allreduce's ring for `count` elements of `elementSize` bytes.
int64_t glooAllreduceChunkElements(int64_t count, int64_t elementSize, int size);
// The same for gloo::reduce, whose segments differ once a buffer exceeds 2 * size MiB.
int64_t glooReduceChunkElements(int64_t count, int64_t elementSize, int size);

// The k-th rank (k = 0 .. size - 1) whose contribution enters chunk `chunk`'s sum.
inline int glooRingRank(int64_t chunk, int k, int size) {
  return static_cast<int>(((chunk - 1 - k) % size + size) % size);
}

// Reduces `length` bytes of every rank's contribution (`fromRank[r]` points at rank r's,
// each a piece of a buffer of `type` that starts at element `firstElement`) into `into`,
// each of Gloo's chunks of `chunkElements` in its ring order: the bits Gloo's ring gives.
void reduceInGlooOrder(
    c10d::ReduceOp::RedOpType op,
    at::ScalarType type,
    uint8_t* into,
    int64_t firstElement,
    int64_t length,
    const std::vector<const uint8_t*>& fromRank,
    int64_t chunkElements);

} // namespace qccl::algo
