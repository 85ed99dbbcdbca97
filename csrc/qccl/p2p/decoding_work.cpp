#include "qccl/p2p/decoding_work.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "qccl/common/errors.h"
#include "qccl/p2p/payload_codec.h"

namespace qccl::p2p {
namespace {

std::vector<c10::Device> streamDevices(const at::Tensor& tensor) {
  if (tensor.is_cuda()) {
    return {tensor.device()};  // a stream-aware future, as ProcessGroupNCCL's
  }
  return {};
}

// The caching allocator may hand `tensor`'s memory out again once it is freed, but only
// to work ordered after the streams recorded on it: the decode may run on another stream
// than the one the payload was allocated on.
void keepUntilCurrentStreamPasses(const at::Tensor& tensor) {
  if (!tensor.is_cuda()) {
    return;
  }
  const c10::impl::VirtualGuardImpl device(tensor.device().type());
  device.recordDataPtrOnStream(tensor.storage().data_ptr(), device.getStream(tensor.device()));
}

} // namespace

DecodingWork::DecodingWork(
    int rank,
    std::string name,
    at::Tensor tensor,
    at::Tensor payload,
    CodecKind codec,
    int64_t block,
    int peer,
    c10::intrusive_ptr<c10d::Work> transfer)
    : FutureWork(rank, c10d::OpType::RECV, std::move(name), {tensor}, 0, streamDevices(tensor)),
      transfer_(std::move(transfer)),
      tensor_(std::move(tensor)),
      payload_(std::move(payload)),
      codec_(codec),
      block_(block),
      peer_(peer) {}

void DecodingWork::setTransfer(c10::intrusive_ptr<c10d::Work> transfer) {
  std::lock_guard<std::mutex> lock(decodeMutex_);
  transfer_ = std::move(transfer);
}

void DecodingWork::decodeOnce(std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(decodeMutex_);
  if (FutureWork::isCompleted()) {
    return;
  }
  if (!transfer_) {
    markFailed(std::make_exception_ptr(c10::ValueError(
        {__func__, __FILE__, __LINE__},
        "qccl: " + name() + " on rank " + std::to_string(rank_) +
            " was waited on inside its coalescing window; wait after the window ends (batch_isend_irecv does)")));
    return;
  }
  try {
    transfer_->wait(timeout);
    decodePayload(payload_, codec_, block_, tensor_);
    keepUntilCurrentStreamPasses(payload_);
    payload_ = at::Tensor();
    markSucceeded();  // on CUDA, records the current stream, which holds the decode
  } catch (...) {
    markFailed(makeCommError(failureMessage(name(), rank_, std::current_exception())));
  }
}

bool DecodingWork::wait(std::chrono::milliseconds timeout) {
  decodeOnce(timeout);
  future()->wait();  // on CUDA: the current stream waits for the decode
  if (auto error = exception()) {
    std::rethrow_exception(error);
  }
  return true;
}

bool DecodingWork::isCompleted() {
  if (FutureWork::isCompleted()) {
    return true;
  }
  c10::intrusive_ptr<c10d::Work> transfer;
  {
    std::lock_guard<std::mutex> lock(decodeMutex_);
    transfer = transfer_;
  }
  if (!transfer || !transfer->isCompleted()) {
    return false;
  }
  decodeOnce(kNoTimeout);
  return true;
}

c10::intrusive_ptr<c10::ivalue::Future> DecodingWork::getFuture() {
  decodeOnce(kNoTimeout);
  return future();
}

int DecodingWork::sourceRank() const {
  return peer_;
}

} // namespace qccl::p2p
