#pragma once

// What an algorithm needs of a transport: a c10d backend to issue collectives on, and a
// wait that turns their failures into qccl errors. GlooTransport (CPU tensors) and
// NcclTransport (CUDA tensors) provide it, so one algorithm serves both devices.

#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>

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
};

} // namespace qccl
