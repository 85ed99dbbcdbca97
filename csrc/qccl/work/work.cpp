#include "qccl/work/work.h"

#include <mutex>
#include <unordered_set>

#include <ATen/core/jit_type.h>
#include <ATen/record_function.h>

#include "qccl/common/errors.h"

namespace qccl {
namespace {

c10::intrusive_ptr<c10::ivalue::Future> makeTensorListFuture(std::vector<c10::Device> devices = {}) {
  return c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()), std::move(devices));
}

// The title torch.profiler shows for a Work, as Gloo's "gloo:all_reduce": "qccl:" and the
// first word of its name ("all_reduce", "send to rank 1" -> "qccl:send"). Kept for the
// life of the process, as the profiler reads it when the Work completes; there are as
// many as op names. Null while nothing records (no RecordFunction callbacks): c10d's Work
// then skips its profiling, and every call skips this lookup.
const char* profilingTitle(const std::string& name) {
  if (!at::hasCallbacks()) {
    return nullptr;
  }
  static std::mutex mutex;
  static std::unordered_set<std::string> titles;  // node-based: the pointers stay valid
  std::lock_guard<std::mutex> lock(mutex);
  return titles.insert("qccl:" + name.substr(0, name.find(' '))).first->c_str();
}

} // namespace

FutureWork::FutureWork(
    int rank,
    c10d::OpType type,
    std::string name,
    std::vector<at::Tensor> outputs,
    uint64_t seq,
    std::vector<c10::Device> devices,
    const std::vector<at::Tensor>& inputs)
    : Work(rank, type, profilingTitle(name), inputs.empty() ? outputs : inputs),
      name_(std::move(name)),
      outputs_(std::move(outputs)),
      seq_(seq),
      future_(makeTensorListFuture(std::move(devices))) {}

StreamWork::StreamWork(int rank, c10d::OpType type, std::string name, std::vector<at::Tensor> outputs, uint64_t seq)
    : FutureWork(rank, type, std::move(name), outputs, seq, {outputs.at(0).device()}) {
  markSucceeded();  // records an event on each device's current stream
}

bool StreamWork::wait(std::chrono::milliseconds /*timeout*/) {
  getFuture()->wait();  // makes the current stream wait for the recorded event
  return true;
}

// The future completes first, so whoever wait()s on the work finds the future complete
// too; isCompleted() and exception() read the future, so whoever waits on the future
// finds the work complete.
bool FutureWork::markSucceeded() {
  if (settled_.exchange(true)) {
    return false;
  }
  future_->markCompleted(c10::IValue(outputs_));
  finish();
  return true;
}

bool FutureWork::markFailed(std::exception_ptr error) {
  if (settled_.exchange(true)) {
    return false;
  }
  future_->setError(error);
  finish(error);
  return true;
}

bool FutureWork::isCompleted() {
  return future_->completed();
}

bool FutureWork::isSuccess() const {
  return future_->completed() && !future_->hasError();
}

std::exception_ptr FutureWork::exception() const {
  return future_->completed() && future_->hasError() ? future_->exception_ptr() : nullptr;
}

std::vector<at::Tensor> FutureWork::result() {
  return outputs_;
}

c10::intrusive_ptr<c10::ivalue::Future> FutureWork::getFuture() {
  return future_;
}

uint64_t FutureWork::getSequencenumber() const {
  return seq_;
}


namespace {

// An inner backend's Work may have no outputs to give: ProcessGroupNCCL's batch Work
// dereferences an empty list in result().
std::vector<at::Tensor> outputsOf(const std::vector<c10::intrusive_ptr<c10d::Work>>& parts) {
  std::vector<at::Tensor> outputs;
  for (const auto& part : parts) {
    if (auto* ours = dynamic_cast<FutureWork*>(part.get())) {
      for (auto& t : ours->result()) {
        outputs.push_back(t);
      }
    }
  }
  return outputs;
}

// Without side effects (see FutureWork::future()).
c10::intrusive_ptr<c10::ivalue::Future> futureOf(const c10::intrusive_ptr<c10d::Work>& part) {
  if (auto* ours = dynamic_cast<FutureWork*>(part.get())) {
    return ours->future();
  }
  return part->getFuture();
}

} // namespace

c10::intrusive_ptr<BatchWork> BatchWork::create(int rank, std::vector<c10::intrusive_ptr<c10d::Work>> parts) {
  auto batch = c10::make_intrusive<BatchWork>(rank, std::move(parts));
  for (auto& part : batch->parts_) {
    // Each callback holds the batch alive until its part has reported.
    futureOf(part)->addCallback([batch](c10::ivalue::Future&) { batch->partDone(); });
  }
  batch->partDone();  // creation's own count: an empty batch completes at once
  return batch;
}

BatchWork::BatchWork(int rank, std::vector<c10::intrusive_ptr<c10d::Work>> parts)
    : FutureWork(rank, c10d::OpType::COALESCED, "coalesced batch", outputsOf(parts)),
      parts_(std::move(parts)),
      pending_(parts_.size() + 1) {}

void BatchWork::partDone() {
  if (pending_.fetch_sub(1) != 1) {
    return;
  }
  for (auto& part : parts_) {
    if (auto error = part->exception()) {
      markFailed(error);
      return;
    }
  }
  markSucceeded();
}

bool BatchWork::wait(std::chrono::milliseconds timeout) {
  for (auto& part : parts_) {
    part->wait(timeout);
  }
  return true;
}

bool BatchWork::isCompleted() {
  for (auto& part : parts_) {
    part->isCompleted();
  }
  return FutureWork::isCompleted();
}

c10::intrusive_ptr<c10::ivalue::Future> BatchWork::getFuture() {
  for (auto& part : parts_) {
    part->getFuture();
  }
  return FutureWork::getFuture();
}

} // namespace qccl
