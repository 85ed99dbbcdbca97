#pragma once

// A small exact all_reduce that travels with its cross-rank check (algo/agreement.h):
// every rank's contribution rides in the check's exchange, and each rank reduces them
// itself, so the call needs no exchange of its own: on a link with latency it costs the
// check's one round trip instead of Gloo's ring.
//
// Only where the result is bit for bit what Gloo's allreduce gives: each rank reduces in
// the order of Gloo's ring (gloo_ring_order.h), which makes sums and products of every
// type Gloo's at any world size; bitwise ops and MIN/MAX of integers are exact in any
// order. Floating-point MIN/MAX stay with Gloo (how a NaN spreads is its kernel's).
// Eligibility depends only on facts every rank shares (dtype, size, op, world size), so
// all ranks decide alike.

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/algo/reduce_lowering.h"

namespace qccl::algo {

// The most bytes of contributions one check exchange carries, per rank, at small world
// sizes: with the records, a part stays within one control message of the point-to-point
// engine (p2p/message.h) and TCP's initial window, so it arrives in one trip.
constexpr int64_t kMaxInlineBytes = 8 << 10;

// The most room for contributions in each rank's part of a check exchange of
// `worldSize` ranks (the check sizes the room by what calls needed lately). The exchange
// sends every part to every peer, so each rank receives worldSize - 1 of them: the room
// shrinks as the world grows, to keep what a rank receives at most about 64 KiB (8 KiB
// up to 9 ranks, 1 KiB at 64, 64 bytes from 1024 on, which still carries a few scalars).
int64_t inlineBytesPerCheck(int worldSize);

class LocalAllreduce {
 public:
  // Null unless an exact all_reduce of `tensor` with `op` qualifies.
  static std::shared_ptr<LocalAllreduce> ifEligible(const at::Tensor& tensor, const c10d::ReduceOp& op, int worldSize);

  // This rank's contribution as bytes, read from the tensor now.
  at::Tensor contribution() const;
  // Every rank's contribution (in rank order, as contribution() wrote them) came with
  // the check.
  void received(std::vector<at::Tensor> contributions);
  bool hasContributions() const {
    return !contributions_.empty();
  }
  // Reduces the contributions into the tensor.
  void finish();

 private:
  LocalAllreduce(const at::Tensor& tensor, LoweredReduction lowered, int worldSize);

  at::Tensor tensor_;
  LoweredReduction lowered_;
  int worldSize_;
  std::vector<at::Tensor> contributions_;
};

} // namespace qccl::algo
