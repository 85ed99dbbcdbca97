#pragma once

// Argument checks run on the caller's thread before anything is queued, so bad input
// raises at the call site with a "qccl: <op> on rank <r>: ..." message (docs/errors.md).
// Only local facts are checked here; what other ranks passed is Gloo's to detect.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

namespace qccl {

class OpChecker {
 public:
  OpChecker(std::string op, int rank, int size);

  // A dense CPU or CUDA tensor, on the same device as the call's others, whose elements
  // each have memory of their own. CUDA tensors must be contiguous (as NCCL requires);
  // CPU collectives accept other strides, as Gloo does, and run on contiguous copies.
  void tensor(const at::Tensor& t, const std::string& what) const;
  // Whether the call's tensors (checked so far) are CUDA tensors.
  bool onCuda() const {
    return device_.has_value() && device_->is_cuda();
  }
  // Whether one of the call's tensors (checked so far) is not contiguous.
  bool strided() const {
    return strided_;
  }
  // A contiguous tensor: point-to-point needs one (as Gloo and NCCL do).
  void contiguous(const at::Tensor& t, const std::string& what) const;
  // Exactly one tensor in the list, checked with tensor(); returns it.
  at::Tensor& single(std::vector<at::Tensor>& tensors) const;
  // The one list (of one per rank) inside `lists`: `size` tensors, each checked with
  // tensor() and sizedLike(ref). Returns that list.
  std::vector<at::Tensor> onePerRank(
      const std::vector<std::vector<at::Tensor>>& lists,
      const at::Tensor& ref,
      const std::string& what) const;
  void nonEmpty(size_t count, const std::string& what) const;
  void count(size_t got, size_t expected, const std::string& what) const;
  void rank(int64_t r, const std::string& what) const;
  // A peer for point-to-point: a valid rank other than this one.
  void peer(int64_t r) const;
  void sameDtype(const at::Tensor& t, const at::Tensor& ref, const std::string& what) const;
  // Same dtype, and numel(t) == numel(ref) * factor.
  void sizedLike(const at::Tensor& t, const at::Tensor& ref, int64_t factor, const std::string& what) const;
  // A (ReduceOp, dtype) pair qccl can reduce (see algo/reduce_lowering.h).
  void reducible(const c10d::ReduceOp& op, at::ScalarType dtype) const;
  // Split sizes for all_to_all_single along dim 0 of `t`.
  void splits(const std::vector<int64_t>& splits, const at::Tensor& t, const std::string& what) const;

 private:
  std::string prefix() const;

  std::string op_;
  int rank_;
  int size_;
  mutable std::optional<c10::Device> device_;  // of the first tensor checked
  mutable bool strided_ = false;
};

} // namespace qccl
