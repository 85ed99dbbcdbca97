#pragma once

// The c10d face of OneHost (its Transport::backend()), so that the compressed algorithms,
// written against Transport, move their encoded bytes through shared memory unchanged
// (issue 28: placement never changes results). They call all_to_all_single and
// all_gather_into_tensor on byte tensors; each runs at once, on the caller's thread, and
// returns a Work already done (a failure raises from the call itself). Every rank posts
// them in the same order, so the channel's rounds pair up. Nothing else is served.

#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>

namespace qccl::algo {

class OneHost;

class OneHostBackend : public c10d::Backend {
 public:
  explicit OneHostBackend(OneHost& oneHost);

  const std::string getBackendName() const override {
    return "qccl shared memory";
  }
  c10::intrusive_ptr<c10d::Work> alltoall_base(
      at::Tensor& output,
      at::Tensor& input,
      std::vector<int64_t>& outputSplits,
      std::vector<int64_t>& inputSplits,
      const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(
      at::Tensor& output,
      at::Tensor& input,
      const c10d::AllgatherOptions& opts) override;

 private:
  OneHost& oneHost_;
};

} // namespace qccl::algo
