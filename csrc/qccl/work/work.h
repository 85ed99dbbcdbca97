#pragma once

// The Work objects qccl hands to PyTorch, shared by the backend and point-to-point
// layers (p2p/waiting_work.h adds the one only point-to-point uses).
//
// FutureWork: a Work whose future completes with its output tensors (DDP reads them
// through getFuture()) or carries its error. Collectives use it directly: the group's
// worker thread marks it succeeded or failed.
//
// StreamWork: a collective whose GPU work was enqueued on the caller's CUDA stream (the
// compressed allreduce over NCCL). Done for the host once enqueued; its future records
// that stream, so wait() and the future's callbacks make the current stream wait for
// it, as ProcessGroupNCCL's works do.
//
// BatchWork: the one Work of a coalesced batch (batch_isend_irecv): completes when all
// of its parts have, failing with the first part's error. Its outputs are those of
// qccl's own parts.

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>
#include <torch/csrc/distributed/c10d/Work.hpp>


namespace qccl {

class FutureWork : public c10d::Work {
 public:
  FutureWork(
      int rank,
      c10d::OpType type,
      std::string name,
      std::vector<at::Tensor> outputs,
      uint64_t seq = 0,
      std::vector<c10::Device> devices = {},  // CUDA devices: a stream-aware future
      // What the call reads besides its outputs: torch.profiler records these shapes for
      // its event, as for Gloo's (the outputs' when there are none).
      const std::vector<at::Tensor>& inputs = {});

  const std::string& name() const {
    return name_;
  }
  // The first of these calls settles the work; later ones do nothing and return false
  // (a receive that timed out may still be delivered to).
  bool markSucceeded();
  bool markFailed(std::exception_ptr error);

  // The future is the single source of truth for completion and error.
  bool isCompleted() override;
  bool isSuccess() const override;
  std::exception_ptr exception() const override;
  std::vector<at::Tensor> result() override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;
  uint64_t getSequencenumber() const override;
  // The future itself: getFuture() may first do the work's last step (DecodingWork).
  const c10::intrusive_ptr<c10::ivalue::Future>& future() const {
    return future_;
  }

 private:
  std::string name_;
  std::vector<at::Tensor> outputs_;
  uint64_t seq_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
  std::atomic<bool> settled_{false};
};

class StreamWork : public FutureWork {
 public:
  // Call on the thread whose current stream holds the work, right after enqueuing it.
  StreamWork(int rank, c10d::OpType type, std::string name, std::vector<at::Tensor> outputs, uint64_t seq);

  bool wait(std::chrono::milliseconds timeout = kNoTimeout) override;
};

class BatchWork : public FutureWork {
 public:
  static c10::intrusive_ptr<BatchWork> create(int rank, std::vector<c10::intrusive_ptr<c10d::Work>> parts);
  BatchWork(int rank, std::vector<c10::intrusive_ptr<c10d::Work>> parts);

  // Waits on every part, so each part's own timeout and error apply.
  bool wait(std::chrono::milliseconds timeout = kNoTimeout) override;
  // Ask each part first: a part may finish only when asked (a DecodingWork decodes on
  // the asker's stream), never when the batch is created.
  bool isCompleted() override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;

 private:
  void partDone();

  std::vector<c10::intrusive_ptr<c10d::Work>> parts_;
  std::atomic<size_t> pending_;
};

} // namespace qccl
