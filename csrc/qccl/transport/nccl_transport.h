#pragma once

// The CUDA transport: the group's ProcessGroupNCCL (created beside the Gloo one, see
// docs/cuda.md). Collectives run on NCCL's stream after the caller's current stream;
// waiting makes the current stream wait, so an algorithm that launches its kernels on
// the current stream never blocks the host. NCCL's own watchdog bounds every wait.

#include "qccl/transport/transport.h"

namespace qccl {

class NcclTransport : public Transport {
 public:
  explicit NcclTransport(c10d::Backend& nccl) : nccl_(nccl) {}

  c10d::Backend& backend() override {
    return nccl_;
  }
  int rank() const override {
    return nccl_.getRank();
  }
  int size() const override {
    return nccl_.getSize();
  }

  void waitFor(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) override;

 private:
  c10d::Backend& nccl_;
};

} // namespace qccl
