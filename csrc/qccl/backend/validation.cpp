#include "qccl/backend/validation.h"

#include <ATen/MemoryOverlap.h>
#include <c10/util/irange.h>

#include "qccl/algo/reduce_lowering.h"
#include "qccl/common/errors.h"

namespace qccl {

OpChecker::OpChecker(std::string op, int rank, int size)
    : op_(std::move(op)), rank_(rank), size_(size) {}

std::string OpChecker::prefix() const {
  return op_ + " on rank " + std::to_string(rank_) + ": ";
}

void OpChecker::tensor(const at::Tensor& t, const std::string& what) const {
  QCCL_CHECK_VALUE(t.defined(), prefix(), what, " is an undefined tensor");
  QCCL_CHECK_VALUE(
      t.is_cpu() || t.is_cuda(), prefix(), what, " must be a CPU or CUDA tensor, got device ", t.device().str());
  if (!device_) {
    device_ = t.device();
  }
  QCCL_CHECK_VALUE(
      t.device() == *device_, prefix(), what, " is on ", t.device().str(), " but the call's first tensor is on ",
      device_->str(), "; every tensor of one call must be on the same device");
  QCCL_CHECK_VALUE(
      t.layout() == at::kStrided, prefix(), what, " must be a dense tensor, got layout ",
      t.layout());
  if (t.is_contiguous()) {
    return;
  }
  QCCL_CHECK_VALUE(
      at::has_internal_overlap(t) != at::MemOverlap::Yes, prefix(), what,
      " has elements that share memory (an expand()ed view); call .contiguous() first");
  QCCL_CHECK_VALUE(
      t.is_cpu(), prefix(), what, " must be contiguous on ", t.device().str(),
      ", as NCCL requires (call .contiguous() first)");
  strided_ = true;
}

void OpChecker::contiguous(const at::Tensor& t, const std::string& what) const {
  QCCL_CHECK_VALUE(
      t.is_contiguous(), prefix(), what, " must be contiguous for point-to-point, as with Gloo and NCCL "
      "(call .contiguous() first)");
}

at::Tensor& OpChecker::single(std::vector<at::Tensor>& tensors) const {
  QCCL_CHECK_VALUE(
      tensors.size() == 1, prefix(), "expected exactly one tensor, got ", tensors.size());
  tensor(tensors[0], "the tensor");
  return tensors[0];
}

std::vector<at::Tensor> OpChecker::onePerRank(
    const std::vector<std::vector<at::Tensor>>& lists,
    const at::Tensor& ref,
    const std::string& what) const {
  count(lists.size(), 1, "the list of " + what + " lists");
  count(lists[0].size(), size_, "the " + what + " list");
  for (const auto& t : lists[0]) {
    tensor(t, "every " + what);
    sizedLike(t, ref, 1, "an " + what);
  }
  return lists[0];
}

void OpChecker::nonEmpty(size_t count, const std::string& what) const {
  QCCL_CHECK_VALUE(count > 0, prefix(), what, " must not be empty");
}

void OpChecker::count(size_t got, size_t expected, const std::string& what) const {
  QCCL_CHECK_VALUE(
      got == expected, prefix(), what, " must hold ", expected, " tensors, got ", got);
}

void OpChecker::rank(int64_t r, const std::string& what) const {
  QCCL_CHECK_VALUE(
      r >= 0 && r < size_, prefix(), what, " ", r, " is not a rank of this group (size ", size_,
      ")");
}

void OpChecker::peer(int64_t r) const {
  rank(r, "peer");
  QCCL_CHECK_VALUE(r != rank_, prefix(), "a rank cannot send to or receive from itself");
}

void OpChecker::sameDtype(const at::Tensor& t, const at::Tensor& ref, const std::string& what) const {
  QCCL_CHECK_TYPE(
      t.scalar_type() == ref.scalar_type(), prefix(), what, " has dtype ", t.scalar_type(),
      " but the input has dtype ", ref.scalar_type());
}

void OpChecker::sizedLike(
    const at::Tensor& t,
    const at::Tensor& ref,
    int64_t factor,
    const std::string& what) const {
  sameDtype(t, ref, what);
  QCCL_CHECK_VALUE(
      t.numel() == ref.numel() * factor, prefix(), what, " has ", t.numel(),
      " elements, expected ", ref.numel() * factor,
      factor == 1 ? std::string() : " (" + std::to_string(factor) + " x the input's " +
              std::to_string(ref.numel()) + ")");
}

void OpChecker::reducible(const c10d::ReduceOp& op, at::ScalarType dtype) const {
  lowerReduction(op, dtype, op_ + " on rank " + std::to_string(rank_));
}

void OpChecker::splits(const std::vector<int64_t>& splits, const at::Tensor& t, const std::string& what) const {
  QCCL_CHECK_VALUE(t.dim() >= 1, prefix(), what, " must have at least one dimension");
  if (splits.empty()) {
    QCCL_CHECK_VALUE(
        t.size(0) % size_ == 0, prefix(), what, " has ", t.size(0),
        " rows, not divisible by the group size ", size_, "; pass split sizes");
    return;
  }
  QCCL_CHECK_VALUE(
      static_cast<int64_t>(splits.size()) == size_, prefix(), what, " split sizes must have ",
      size_, " entries, got ", splits.size());
  int64_t total = 0;
  for (auto i : c10::irange(splits.size())) {
    QCCL_CHECK_VALUE(splits[i] >= 0, prefix(), what, " split size ", i, " is negative");
    total += splits[i];
  }
  QCCL_CHECK_VALUE(
      total == t.size(0), prefix(), what, " split sizes add up to ", total, " rows but it has ",
      t.size(0));
}

} // namespace qccl
