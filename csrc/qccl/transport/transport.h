#pragma once

// What an algorithm needs of a transport: a c10d backend to issue collectives on, and a
// wait that turns their failures into qccl errors. GlooTransport (CPU tensors) and
// NcclTransport (CUDA tensors) provide it, so one algorithm serves both devices.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "qccl/transport/slots.h"

namespace qccl {

class Transport {
 public:
  virtual ~Transport() = default;

  virtual c10d::Backend& backend() = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Returns once what `work` produces may be used by the caller's next step: for Gloo
  // when it has finished, for NCCL when the current CUDA stream waits for it (the host
  // does not). Raises DistBackendError naming `what` when it failed.
  virtual void waitFor(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) = 0;

  // Whether an algorithm may post receives ahead of the data and exchange bytes pairwise
  // (sendBytes, receiveBytes) instead of through collectives. A Gloo send waits until
  // its receive is posted, so on a link with latency every collective costs a round trip
  // before its bytes move, and ranks a one-way latency apart send in turn, not at once;
  // a receive posted ahead removes both. NCCL runs a stream's operations in order, so an
  // early receive would hold up the kernels queued behind it: not there.
  virtual bool postsReceivesAhead() const {
    return false;
  }
  // Pairwise transfers of contiguous bytes on `slot`; each (peer, slot) is matched in
  // posting order, so both sides must post their transfers of a slot in the same order.
  c10::intrusive_ptr<c10d::Work> sendBytes(const at::Tensor& bytes, int peer, uint32_t slot) {
    std::vector<at::Tensor> tensors{bytes};
    return backend().send(tensors, peer, static_cast<int>(slot));
  }
  c10::intrusive_ptr<c10d::Work> receiveBytes(const at::Tensor& bytes, int peer, uint32_t slot) {
    std::vector<at::Tensor> tensors{bytes};
    return backend().recv(tensors, peer, static_cast<int>(slot));
  }
};

} // namespace qccl
