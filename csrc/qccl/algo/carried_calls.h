#pragma once

// The small exact calls besides all_reduce (local_allreduce.h) that travel with their
// cross-rank check (carried_call.h). Each gives the bits its own exchange gives: a
// broadcast and an all-gather only copy bytes; a reduce-scatter reduces its block of
// every rank's whole input in the order of Gloo's ring over the whole input, which is
// what Gloo's reduce_scatter does (gloo_ring_order.h).
//
// Each is built on the tensors the call runs on (contiguous: backend/call_staging.h), on
// the caller's thread; null where the call does not qualify.

#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/algo/carried_call.h"
#include "qccl/algo/reduce_lowering.h"

namespace qccl::algo {

class CarriedBroadcast : public CarriedCall {
 public:
  static std::shared_ptr<CarriedBroadcast> ifEligible(const at::Tensor& tensor, int64_t root, int worldSize);
  at::Tensor contribution() const override;

 private:
  CarriedBroadcast(const at::Tensor& tensor, int64_t root) : tensor_(tensor), root_(root) {}
  void finishFrom(const std::vector<at::Tensor>& contributions) override;

  at::Tensor tensor_;
  int64_t root_;
};

// Gathers every rank's `input` into `output` (rank r's at the r-th of its equal parts).
class CarriedAllgather : public CarriedCall {
 public:
  static std::shared_ptr<CarriedAllgather> ifEligible(const at::Tensor& output, const at::Tensor& input, int worldSize);
  at::Tensor contribution() const override;

 private:
  CarriedAllgather(const at::Tensor& output, const at::Tensor& input) : output_(output), input_(input) {}
  void finishFrom(const std::vector<at::Tensor>& contributions) override;

  at::Tensor output_;
  at::Tensor input_;
};

// This rank's block of the reduction of every rank's `input` into `output`.
class CarriedReduceScatter : public CarriedCall {
 public:
  static std::shared_ptr<CarriedReduceScatter> ifEligible(
      const at::Tensor& output,
      const at::Tensor& input,
      const c10d::ReduceOp& op,
      int rank,
      int worldSize);
  at::Tensor contribution() const override;

 private:
  CarriedReduceScatter(const at::Tensor& output, const at::Tensor& input, LoweredReduction lowered, int rank, int worldSize)
      : output_(output), input_(input), lowered_(std::move(lowered)), rank_(rank), worldSize_(worldSize) {}
  void finishFrom(const std::vector<at::Tensor>& contributions) override;

  at::Tensor output_;
  at::Tensor input_;
  LoweredReduction lowered_;
  int rank_;
  int worldSize_;
};

} // namespace qccl::algo
