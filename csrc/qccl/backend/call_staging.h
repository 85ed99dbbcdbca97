#pragma once

// Runs a call on copies of its tensors, where the path it takes cannot use the tensors
// themselves, and copies what the call wrote back before the caller's Work completes:
//
//   - HostCopies: CUDA tensors under QCCL_CUDA_TRANSPORT=gloo (or what NCCL cannot do)
//     are copied to host memory and run through qccl's CPU path (Gloo, with codecs,
//     fusion and p2p as for CPU tensors). The copies to the host wait for the caller's
//     current stream, so the call sees what the caller enqueued before it. wait() blocks
//     the host (unlike NCCL's, which only makes the current stream wait).
//   - ContiguousCopies: CPU views that are not contiguous (a transpose, a slice with a
//     step), which Gloo accepts for its collectives, run on contiguous copies; the
//     result is written back into the view, as Gloo does.
//   - PassThrough: the caller's tensors themselves (contiguous CPU tensors).
//
// Each op describes its CPU path once, on the tensors a staging gives, and every route
// runs that one description: nothing re-enters the group's public API.

#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace qccl {

class CallStaging {
 public:
  enum class Mode { PassThrough, HostCopies, ContiguousCopies };

  CallStaging(Mode mode, int rank) : mode_(mode), rank_(rank) {}

  // The staging a call on the CPU path needs: host copies of CUDA tensors, contiguous
  // copies of strided views, or none.
  static Mode modeFor(bool onCuda, bool strided) {
    return onCuda ? Mode::HostCopies : strided ? Mode::ContiguousCopies : Mode::PassThrough;
  }

  // Tensors the call only reads.
  std::vector<at::Tensor> reads(const std::vector<at::Tensor>& tensors);
  std::vector<std::vector<at::Tensor>> reads(const std::vector<std::vector<at::Tensor>>& lists);
  at::Tensor reads(const at::Tensor& tensor);
  // Tensors the call writes (and may read first, as an in-place all_reduce does).
  std::vector<at::Tensor> writes(const std::vector<at::Tensor>& tensors);
  std::vector<std::vector<at::Tensor>> writes(const std::vector<std::vector<at::Tensor>>& lists);
  at::Tensor writes(const at::Tensor& tensor);

  // The Work the caller gets for `inner`, the Work of the call on the copies.
  c10::intrusive_ptr<c10d::Work> finish(const c10::intrusive_ptr<c10d::Work>& inner);

 private:
  // The copy the call uses instead of `tensor`, or `tensor` itself.
  at::Tensor copyOf(const at::Tensor& tensor) const;

  Mode mode_;
  int rank_;
  std::vector<at::Tensor> written_;  // the caller's tensors, in the order of their copies
  std::vector<at::Tensor> copies_;
};

} // namespace qccl
