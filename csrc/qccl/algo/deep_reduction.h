#pragma once

// Large exact reductions that keep enough bytes on the wire for a link with latency.
//
// Gloo's own ring keeps about two 1 MiB segments in flight per rank, so on a long link it
// waits a round trip for every few MiB (a 64 MiB all_reduce took 870 ms over 1 Gbit/s at
// 20 ms RTT, where its bytes need 562 ms), and its reduce_scatter all-reduces the whole
// input to keep one block of it (twice the bytes a reduce-scatter needs). Here each
// element has an owner rank: every rank sends each owner its part of what the owner
// reduces, in pieces, into receives posted ahead (Transport::postsReceivesAhead), with
// many pieces on the wire while the worker reduces others. all_reduce then sends each
// owner's result back to every rank; reduce_scatter keeps it (the owner of a block is
// the rank whose output it is).
//
// An owner holds every rank's contribution to what it reduces, so it reduces them in the
// order of Gloo's ring over the whole buffer (gloo_ring_order.h): results are Gloo's to
// the bit, on every rank, at any world size. Only for ops and types where that order
// gives Gloo's bits (reducesAsGloo); the others stay with Gloo.

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/transport/transport.h"

namespace qccl::algo {

// Buffers from this size on go the deep way, where the transport allows it: below it a
// few of Gloo's segments cover the buffer anyway.
constexpr int64_t kDeepReductionMinBytes = int64_t{1} << 20;

// Whether a reduction of `wire` (the lowered input, reduce_lowering.h) with `op` goes the
// deep way over `net`. Depends only on what every rank's call agrees on.
bool goesDeep(Transport& net, const at::Tensor& wire, c10d::ReduceOp::RedOpType op);

// Both raise DistBackendError when a transfer fails, times out or is aborted, and need
// goesDeep(net, input, op).
// Reduces the contiguous `wire` in place across `net`'s ranks.
void deepAllreduce(Transport& net, at::Tensor& wire, c10d::ReduceOp::RedOpType op);
// Reduces the contiguous `input` (as many blocks of `output`'s size as ranks) across
// `net`'s ranks into the contiguous `output`: this rank's block of the result.
void deepReduceScatter(Transport& net, at::Tensor& output, const at::Tensor& input, c10d::ReduceOp::RedOpType op);

} // namespace qccl::algo
