#pragma once

// CUDA tensors under QCCL_CUDA_TRANSPORT=gloo: each call copies its tensors to host
// memory, runs qccl's CPU path on the copies (Gloo, with codecs, fusion and p2p as for
// CPU tensors), then copies what the call wrote back to the GPU before its Work completes.
//
// The copies to the host wait for the caller's current stream, so the call sees what the
// caller enqueued before it. The copies back finish before the Work completes, so
// wait(), the future and everything enqueued after wait() see the result. wait() blocks
// the host (unlike NCCL's, which only makes the current stream wait).
//
// The same interface passes tensors through untouched for the NCCL transport, so each
// op describes its tensors once for both (ProcessGroupQCCL::onCuda).

#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace qccl {

class HostStaging {
 public:
  HostStaging(bool toHost, int rank) : toHost_(toHost), rank_(rank) {}

  // Whether the call runs on host copies (through this group's CPU path).
  bool toHost() const {
    return toHost_;
  }

  // Tensors the call only reads.
  std::vector<at::Tensor> reads(const std::vector<at::Tensor>& tensors);
  std::vector<std::vector<at::Tensor>> reads(const std::vector<std::vector<at::Tensor>>& lists);
  at::Tensor reads(const at::Tensor& tensor);
  // Tensors the call writes (and may read first, as an in-place all_reduce does).
  std::vector<at::Tensor> writes(const std::vector<at::Tensor>& tensors);
  std::vector<std::vector<at::Tensor>> writes(const std::vector<std::vector<at::Tensor>>& lists);
  at::Tensor writes(const at::Tensor& tensor);

  // The Work the caller gets for `inner`, the Work of the call on the host copies.
  c10::intrusive_ptr<c10d::Work> finish(const c10::intrusive_ptr<c10d::Work>& inner);

 private:
  bool toHost_;
  int rank_;
  std::vector<at::Tensor> written_;  // on the GPU, in the order of their host copies
  std::vector<at::Tensor> hostCopies_;
};

} // namespace qccl
