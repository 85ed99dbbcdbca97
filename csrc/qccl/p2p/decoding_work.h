#pragma once

// The Work of a compressed receive through an inner backend (inner_backend_p2p.h): the
// inner backend receives the encoded payload, and this Work decodes it into the
// receive's tensor.
//
// The decode runs on the current stream of the first thread that waits on the Work,
// asks for its future, or finds it completed, right after that stream waits for the
// transfer as the inner Work's own wait() makes it. The decode therefore adds no wait
// the inner backend's semantics would not: a schedule that runs on NCCL runs on qccl.
// (Decoding on a side stream as soon as the transfer is done would make one stream wait
// for transfers the caller never waited on, and can deadlock pipeline schedules.)

#include <mutex>

#include "qccl/work/work.h"
#include "qccl/common/codec_kind.h"

namespace qccl::p2p {

class DecodingWork : public FutureWork {
 public:
  // `transfer` receives `payload`; it may be null inside a coalescing window, where the
  // inner backend hands out no Work per op: setTransfer() then gives the batch's.
  DecodingWork(
      int rank,
      std::string name,
      at::Tensor tensor,
      at::Tensor payload,
      CodecKind codec,
      int64_t block,
      int peer,
      c10::intrusive_ptr<c10d::Work> transfer);

  void setTransfer(c10::intrusive_ptr<c10d::Work> transfer);

  bool wait(std::chrono::milliseconds timeout = kNoTimeout) override;
  bool isCompleted() override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;
  int sourceRank() const override;

 private:
  // Waits for the transfer (a stream wait on CUDA), enqueues the decode and settles the
  // Work, once; a failure settles it failed.
  void decodeOnce(std::chrono::milliseconds timeout);

  std::mutex decodeMutex_;  // everything below
  c10::intrusive_ptr<c10d::Work> transfer_;
  at::Tensor tensor_;
  at::Tensor payload_;  // released once decoded
  const CodecKind codec_;
  const int64_t block_;
  const int peer_;
};

} // namespace qccl::p2p
