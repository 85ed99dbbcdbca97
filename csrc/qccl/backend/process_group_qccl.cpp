#include "qccl/backend/process_group_qccl.h"

#include <algorithm>

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/hash.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "qccl/algo/collectives.h"
#include "qccl/backend/check_exchange.h"
#include "qccl/backend/validation.h"
#include "qccl/common/errors.h"
#include "qccl/common/tensor_bytes.h"
#include "qccl/transport/nccl_transport.h"

namespace qccl {

using c10d::OpType;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

namespace {

// The signature of a call on one tensor (see algo/agreement.h).
OpSignature signatureOf(OpType op, const at::Tensor& t, int64_t reduceOp = -1, int64_t root = -1) {
  OpSignature s;
  s.op = op;
  s.dtype = static_cast<int64_t>(t.scalar_type());
  s.elements = t.numel();
  s.reduceOp = reduceOp;
  s.root = root;
  return s;
}

// The signature of a call on a list of tensors.
OpSignature signatureOfList(OpType op, const std::vector<at::Tensor>& ts, int64_t reduceOp = -1) {
  OpSignature s;
  s.op = op;
  for (const auto& t : ts) {
    s.elements += byteSize(t);
  }
  s.reduceOp = reduceOp;
  s.layoutHash = layoutHash(ts);
  return s;
}

int64_t redOp(const c10d::ReduceOp& op) {
  return static_cast<int64_t>(op.op_);
}

// What NCCL reduces itself; anything else on CUDA tensors is staged through the host,
// where qccl's lowering (algo/reduce_lowering.h) serves every pair OpChecker accepts.
bool ncclReduces(const c10d::ReduceOp& op, at::ScalarType dtype) {
  using R = c10d::ReduceOp::RedOpType;
  const bool opOk = op.op_ == R::SUM || op.op_ == R::AVG || op.op_ == R::PRODUCT || op.op_ == R::MIN ||
      op.op_ == R::MAX || op.op_ == R::PREMUL_SUM;
  const bool typeOk = dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16 ||
      dtype == at::kChar || dtype == at::kByte || dtype == at::kInt || dtype == at::kLong;
  return opOk && typeOk;
}

} // namespace

ProcessGroupQCCL::ProcessGroupQCCL(
    c10::intrusive_ptr<c10d::Backend> gloo,
    int rank,
    int size,
    std::chrono::milliseconds timeout,
    Config config,
    c10::intrusive_ptr<c10d::Backend> nccl,
    c10::intrusive_ptr<c10d::Store> store)
    : Backend(rank, size),
      config_(config),
      settingsFingerprint_(config.fingerprint()),
      transport_(std::move(gloo), timeout),
      allreduce_(config, size),
      p2p_(transport_, config, rank, size),
      nccl_(std::move(nccl)),
      ncclP2P_(config, rank, std::move(store), nccl_.defined()) {
  QCCL_CHECK_VALUE(
      transport_.rank() == rank && transport_.size() == size,
      "the Gloo transport is rank ", transport_.rank(), " of ", transport_.size(),
      " but the group is rank ", rank, " of ", size);
  QCCL_CHECK_VALUE(
      !nccl_ || (nccl_->getRank() == rank && nccl_->getSize() == size),
      "the NCCL transport is rank ", nccl_ ? nccl_->getRank() : -1, " of ", nccl_ ? nccl_->getSize() : -1,
      " but the group is rank ", rank, " of ", size);
  init();
}

ProcessGroupQCCL::~ProcessGroupQCCL() {
  stop("the process group was destroyed");
}

namespace {
// Collectives this thread has put into a group's order; collective() compares it before
// and after issuing a call to learn whether the call took its place.
thread_local uint64_t callsPlacedByThisThread = 0;
} // namespace

WorkPtr ProcessGroupQCCL::collective(const std::string& name, OpType op, const std::function<WorkPtr()>& issue) {
  const uint64_t placedBefore = callsPlacedByThisThread;
  try {
    return issue();
  } catch (...) {
    if (callsPlacedByThisThread == placedBefore && config_.verifyAcrossRanks) {
      OpSignature failed;
      failed.op = op;
      failed.failedHere = true;
      // Nobody waits for it: the caller has its error.
      place(name, std::move(failed), {}, {}, [] { return std::optional<StartedTransfer>(); });
    }
    throw;
  }
}

WorkPtr ProcessGroupQCCL::enqueue(
    const std::string& name,
    OpSignature signature,
    std::vector<at::Tensor> outputs,
    std::vector<at::Tensor> inputs,
    std::function<void()> body) {
  return track(place(name, std::move(signature), std::move(outputs), std::move(inputs), [body = std::move(body)] {
    body();
    return std::optional<StartedTransfer>();
  }));
}

WorkPtr ProcessGroupQCCL::enqueueTransfer(
    const std::string& name,
    OpSignature signature,
    std::vector<at::Tensor> outputs,
    std::vector<at::Tensor> inputs,
    std::function<StartedTransfer()> start) {
  return track(place(name, std::move(signature), std::move(outputs), std::move(inputs), [start = std::move(start)] {
    return std::optional<StartedTransfer>(start());
  }));
}

c10::intrusive_ptr<FutureWork> ProcessGroupQCCL::place(
    const std::string& name,
    OpSignature signature,
    std::vector<at::Tensor> outputs,
    std::vector<at::Tensor> inputs,
    OpBody body,
    std::shared_ptr<algo::LocalAllreduce> local,
    std::shared_ptr<Joinable> joinable) {
  signature.settings = settingsFingerprint_;
  auto touches = outputs;
  touches.insert(touches.end(), inputs.begin(), inputs.end());
  auto work = c10::make_intrusive<FutureWork>(rank_, signature.op, name, std::move(outputs), ++seq_);
  ++callsPlacedByThisThread;
  queue_.enqueue(
      {work, name, std::move(signature), std::move(touches), std::move(body), std::move(local), std::move(joinable)});
  return work;
}

std::vector<std::exception_ptr> ProcessGroupQCCL::admit(const std::vector<const QueuedOp*>& batch) {
  std::vector<std::exception_ptr> verdicts;
  if (!outOfStep_.empty()) {
    for (const auto* op : batch) {
      verdicts.push_back(outOfStepError(op->name));
    }
    return verdicts;
  }
  if (!config_.verifyAcrossRanks) {
    return std::vector<std::exception_ptr>(batch.size());
  }
  std::vector<OpSignature> signatures;
  for (const auto* op : batch) {
    signatures.push_back(op->signature);
  }
  markRunStarts(batch, signatures);
  std::vector<CallToCheck> calls;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto* op = batch[i];
    calls.push_back({op->name, &signatures[i], op->local ? op->local->contribution() : at::Tensor()});
  }
  auto checked = check_.compareAcrossRanks(rank_, size_, calls, [this](const at::Tensor& mine, const std::string& what) {
    return exchangeCheckParts(p2p_, transport_, mine, what);
  });
  for (size_t i = 0; i < checked.contributions.size(); ++i) {
    batch[i]->local->received(std::move(checked.contributions[i]));
  }
  applyRunStarts(batch, checked.startsRun);
  const auto& disagreements = checked.verdicts;
  for (size_t i = 0; i < disagreements.size(); ++i) {
    if (!outOfStep_.empty()) {
      verdicts.push_back(outOfStepError(calls[i].opName));  // after a Call disagreement earlier in this batch
      continue;
    }
    const auto& disagreement = disagreements[i];
    if (!disagreement) {
      verdicts.emplace_back();
      continue;
    }
    if (disagreement->kind == Disagreement::Kind::Call) {
      outOfStep_ = disagreement->message;
    }
    try {
      QCCL_CHECK_VALUE(false, disagreement->message);
    } catch (...) {
      verdicts.push_back(std::current_exception());
    }
  }
  return verdicts;
}

std::exception_ptr ProcessGroupQCCL::outOfStepError(const std::string& name) const {
  return makeCommError(
      name + " on rank " + std::to_string(rank_) + ": the group is out of step since an earlier collective whose "
      "arguments did not match across ranks (" + outOfStep_ + "). A rank may have skipped a collective (an error "
      "raised before the call reached qccl), so no later collective of this group would pair with the right one; "
      "create a new group");
}

WorkPtr ProcessGroupQCCL::onCuda(
    const std::string& name,
    const std::optional<OpSignature>& signature,
    const StagedCall& call,
    bool needsHost) {
  if (needsHost || config_.cudaTransport == Config::CudaTransport::StagedThroughHost) {
    CallStaging toHost(CallStaging::Mode::HostCopies, rank_);
    return track(toHost.finish(call(*this, toHost)));  // the host call checks across ranks itself
  }
  QCCL_CHECK_SUPPORTED(
      nccl_, name, " on rank ", rank_, ": CUDA tensors travel through NCCL, and the group has no NCCL backend (this process had no GPU or no "
      "NCCL when the group was created, or a C++ program passed none to qccl::createBackend); set "
      "QCCL_CUDA_TRANSPORT=gloo to stage them through host memory");
  if (signature && config_.verifyAcrossRanks) {
    enqueue(name, *signature, {}, {}, [] {})->wait();  // on the worker, in order with CPU calls
  }
  {
    // NCCL must group a batch's sends and receives, or they deadlock: the first CUDA op
    // of a coalescing window opens NCCL's window too (CPU-only batches never touch NCCL).
    std::lock_guard<std::mutex> lock(coalescingMutex_);
    if (coalescing_ && !ncclCoalescing_.exchange(true)) {
      nccl_->startCoalescing();
    }
  }
  CallStaging direct(CallStaging::Mode::PassThrough, rank_);
  return track(call(*nccl_, direct));
}

WorkPtr ProcessGroupQCCL::onContiguousCopies(const StagedCall& call) {
  CallStaging copies(CallStaging::Mode::ContiguousCopies, rank_);
  return track(copies.finish(call(*this, copies)));  // the call on the copies is checked across ranks itself
}

WorkPtr ProcessGroupQCCL::track(WorkPtr work) {
  std::lock_guard<std::mutex> lock(coalescingMutex_);
  if (coalescing_ && work) {
    coalesced_.push_back(work);
  }
  return work;
}

// --- collectives ------------------------------------------------------------------------

WorkPtr ProcessGroupQCCL::broadcast(std::vector<at::Tensor>& tensors, const c10d::BroadcastOptions& opts) {
  return collective("broadcast", OpType::BROADCAST, [&]() -> WorkPtr {
    OpChecker check("broadcast", rank_, size_);
    auto tensor = check.single(tensors);
    check.rank(opts.rootRank, "root");
    const int64_t root = opts.rootRank;
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto ts = s.writes(tensors);
      return b.broadcast(ts, opts);
    };
    if (tensor.is_cuda()) {
      return onCuda("broadcast", signatureOf(OpType::BROADCAST, tensor, -1, root), call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueueTransfer("broadcast", signatureOf(OpType::BROADCAST, tensor, -1, root), {tensor}, {}, [this, tensor, root]() mutable {
      return algo::broadcast(transport_, tensor, root);
    });
  });
}

WorkPtr ProcessGroupQCCL::allreduce(std::vector<at::Tensor>& tensors, const c10d::AllreduceOptions& opts) {
  return collective("all_reduce", OpType::ALLREDUCE, [&]() -> WorkPtr {
    OpChecker check("all_reduce", rank_, size_);
    auto tensor = check.single(tensors);
    check.reducible(opts.reduceOp, tensor.scalar_type());
    auto signature = signatureOf(OpType::ALLREDUCE, tensor, redOp(opts.reduceOp));
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto ts = s.writes(tensors);
      return b.allreduce(ts, opts);
    };
    if (tensor.is_cuda()) {
      return allreduceOnCuda("all_reduce", std::move(signature), {tensor}, opts.reduceOp, call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return allreduceList("all_reduce", std::move(signature), {tensor}, opts.reduceOp);
  });
}

WorkPtr ProcessGroupQCCL::allreduce_coalesced(
    std::vector<at::Tensor>& tensors,
    const c10d::AllreduceCoalescedOptions& opts) {
  return collective("all_reduce_coalesced", OpType::ALLREDUCE_COALESCED, [&]() -> WorkPtr {
    OpChecker check("all_reduce_coalesced", rank_, size_);
    check.nonEmpty(tensors.size(), "the tensor list");
    for (const auto& t : tensors) {
      check.tensor(t, "every tensor");
      check.reducible(opts.reduceOp, t.scalar_type());
    }
    auto signature = signatureOfList(OpType::ALLREDUCE_COALESCED, tensors, redOp(opts.reduceOp));
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto ts = s.writes(tensors);
      return b.allreduce_coalesced(ts, opts);
    };
    if (check.onCuda()) {
      return allreduceOnCuda("all_reduce_coalesced", std::move(signature), tensors, opts.reduceOp, call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return allreduceList("all_reduce_coalesced", std::move(signature), tensors, opts.reduceOp);
  });
}

std::vector<algo::Route> ProcessGroupQCCL::routeAll(
    const std::vector<at::Tensor>& tensors,
    const c10d::ReduceOp& op,
    OpSignature& signature) const {
  // Decided now, on the caller's thread: qccl.exact() applies to the calls made inside
  // it, whenever they run.
  std::vector<algo::Route> routes;
  size_t plan = 0;
  for (const auto& t : tensors) {
    routes.push_back(allreduce_.route(t, op, exactDepth_.load() > 0));
    plan = c10::hash_combine(plan, static_cast<size_t>(routes.back()) + 1);
  }
  signature.plan = static_cast<int64_t>(plan & 0x7fffffffffffffffULL);
  return routes;
}

WorkPtr ProcessGroupQCCL::allreduceList(
    const std::string& name,
    OpSignature signature,
    std::vector<at::Tensor> tensors,
    const c10d::ReduceOp& op) {
  auto routes = routeAll(tensors, op, signature);
  // A small exact all_reduce may be done from the contributions its check brings.
  auto local = tensors.size() == 1 && routes[0] != algo::Route::Compressed
      ? algo::LocalAllreduce::ifEligible(tensors[0], op, size_)
      : nullptr;
  // A call compressed throughout may run together with its neighbours (joint_allreduce.h).
  std::shared_ptr<Joinable> joinable;
  if (std::all_of(routes.begin(), routes.end(), [](auto r) { return r == algo::Route::Compressed; })) {
    joinable = std::make_shared<JoinableAllreduce>(algo::AllreduceCall{tensors, routes, op});
  }
  return track(place(name, std::move(signature), tensors, {}, [this, tensors, routes, op, local]() mutable {
    std::optional<StartedTransfer> started;
    allreduce_.run(transport_, tensors, routes, op, [&](std::vector<at::Tensor>& bucket, const c10d::ReduceOp&) {
      if (local && local->hasContributions()) {
        local->finish();
      } else if (bucket.size() == 1 && tensors.size() == 1) {
        // The call's only transfer (DDP's buckets with an exact route): the worker goes on
        // to the next call while it is on the wire, and its end completes the call.
        started = algo::startAllreduce(transport_, bucket[0], op);
      } else if (bucket.size() == 1) {
        algo::allreduce(transport_, bucket[0], op);
      } else {
        algo::allreduceCoalesced(transport_, bucket, op);
      }
    });
    return started;
  }, local, std::move(joinable)));
}

void ProcessGroupQCCL::allreduceJointly(const std::vector<QueuedOp*>& ops) {
  std::vector<algo::AllreduceCall> calls;
  for (const auto* op : ops) {
    calls.push_back(static_cast<const JoinableAllreduce&>(*op->joinable).call());
  }
  allreduce_.run(transport_, calls, [this](std::vector<at::Tensor>& bucket, const c10d::ReduceOp& op) {
    algo::allreduceCoalesced(transport_, bucket, op);  // joinable calls have no exact bucket
  });
}

WorkPtr ProcessGroupQCCL::allreduceOnCuda(
    const std::string& name,
    OpSignature signature,
    std::vector<at::Tensor> tensors,
    const c10d::ReduceOp& op,
    const StagedCall& call) {
  auto routes = routeAll(tensors, op, signature);
  const bool compressed = std::find(routes.begin(), routes.end(), algo::Route::Compressed) != routes.end();
  bool ncclCan = true;
  for (const auto& t : tensors) {
    ncclCan = ncclCan && ncclReduces(op, t.scalar_type());
  }
  if (!compressed) {
    return onCuda(name, signature, call, /*needsHost=*/!ncclCan);
  }
  bool batchOpen = false;
  {
    std::lock_guard<std::mutex> lock(coalescingMutex_);
    batchOpen = coalescing_;
  }
  // The GPU algorithm needs NCCL and issues several NCCL calls of its own, which an open
  // coalescing window would absorb: those cases take the host path, also compressed.
  if (!nccl_ || !ncclCan || batchOpen || config_.cudaTransport == Config::CudaTransport::StagedThroughHost) {
    return onCuda(name, signature, call, /*needsHost=*/true);
  }
  const auto device = tensors[0].device();
  const c10::Stream callersStream = c10::impl::getDeviceGuardImpl(device.type())->getStream(device);
  // On the worker, in order with CPU calls: the cross-rank check, then the kernels and
  // NCCL calls, enqueued on the caller's current stream. The caller waits for the
  // enqueuing only, never for the GPU.
  enqueue(name, std::move(signature), {}, {}, [this, tensors, routes, op, callersStream]() mutable {
    c10::StreamGuard onCallersStream(callersStream);
    NcclTransport net(*nccl_);
    allreduce_.run(net, tensors, routes, op, [&](std::vector<at::Tensor>& bucket, const c10d::ReduceOp&) {
      WorkPtr work;
      if (bucket.size() == 1) {
        c10d::AllreduceOptions exact;
        exact.reduceOp = op;
        work = nccl_->allreduce(bucket, exact);
      } else {
        c10d::AllreduceCoalescedOptions exact;
        exact.reduceOp = op;
        work = nccl_->allreduce_coalesced(bucket, exact);
      }
      net.waitFor(work, "all_reduce (exact part)");
    });
  })->wait();
  return track(c10::make_intrusive<StreamWork>(rank_, OpType::ALLREDUCE, name, tensors, seq_.load()));
}

WorkPtr ProcessGroupQCCL::reduce(std::vector<at::Tensor>& tensors, const c10d::ReduceOptions& opts) {
  return collective("reduce", OpType::REDUCE, [&]() -> WorkPtr {
    OpChecker check("reduce", rank_, size_);
    auto tensor = check.single(tensors);
    check.rank(opts.rootRank, "root");
    check.reducible(opts.reduceOp, tensor.scalar_type());
    auto op = opts.reduceOp;
    const int64_t root = opts.rootRank;
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto ts = s.writes(tensors);
      return b.reduce(ts, opts);
    };
    if (tensor.is_cuda()) {
      return onCuda("reduce", signatureOf(OpType::REDUCE, tensor, redOp(op), root), call, !ncclReduces(op, tensor.scalar_type()));
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueueTransfer("reduce", signatureOf(OpType::REDUCE, tensor, redOp(op), root), {tensor}, {}, [this, tensor, op, root]() mutable {
      return algo::reduce(transport_, tensor, op, root);
    });
  });
}

WorkPtr ProcessGroupQCCL::allgather(
    std::vector<std::vector<at::Tensor>>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return collective("all_gather", OpType::ALLGATHER, [&]() -> WorkPtr {
    OpChecker check("all_gather", rank_, size_);
    auto input = check.single(inputs);
    auto outs = check.onePerRank(outputs, input, "output");
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto os = s.writes(outputs);
      auto is = s.reads(inputs);
      return b.allgather(os, is, opts);
    };
    if (input.is_cuda()) {
      return onCuda("all_gather", signatureOf(OpType::ALLGATHER, input), call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueueTransfer("all_gather", signatureOf(OpType::ALLGATHER, input), outs, {input}, [this, outs, input]() mutable {
      return algo::allgather(transport_, outs, input);
    });
  });
}

WorkPtr ProcessGroupQCCL::_allgather_base(at::Tensor& output, at::Tensor& input, const c10d::AllgatherOptions& opts) {
  return collective("all_gather_into_tensor", OpType::_ALLGATHER_BASE, [&]() -> WorkPtr {
    OpChecker check("all_gather_into_tensor", rank_, size_);
    check.tensor(input, "the input");
    check.tensor(output, "the output");
    check.sizedLike(output, input, size_, "the output");
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto o = s.writes(output);
      auto i = s.reads(input);
      return b._allgather_base(o, i, opts);
    };
    if (check.onCuda()) {
      return onCuda("all_gather_into_tensor", signatureOf(OpType::_ALLGATHER_BASE, input), call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueueTransfer("all_gather_into_tensor", signatureOf(OpType::_ALLGATHER_BASE, input), {output}, {input}, [this, output, input]() mutable {
      return algo::allgatherIntoTensor(transport_, output, input);
    });
  });
}

WorkPtr ProcessGroupQCCL::allgather_coalesced(
    std::vector<std::vector<at::Tensor>>& outputLists,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return collective("all_gather_coalesced", OpType::ALLGATHER_COALESCED, [&]() -> WorkPtr {
    OpChecker check("all_gather_coalesced", rank_, size_);
    check.nonEmpty(inputs.size(), "the input list");
    check.count(outputLists.size(), size_, "the output list of lists");
    std::vector<at::Tensor> flatOutputs;
    for (const auto& perRank : outputLists) {
      check.count(perRank.size(), inputs.size(), "each output list");
      for (size_t i = 0; i < inputs.size(); ++i) {
        check.tensor(perRank[i], "every output");
        check.sizedLike(perRank[i], inputs[i], 1, "an output");
        flatOutputs.push_back(perRank[i]);
      }
    }
    for (const auto& t : inputs) {
      check.tensor(t, "every input");
    }
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto os = s.writes(outputLists);
      auto is = s.reads(inputs);
      return b.allgather_coalesced(os, is, opts);
    };
    if (check.onCuda()) {
      return onCuda("all_gather_coalesced", signatureOfList(OpType::ALLGATHER_COALESCED, inputs), call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    auto lists = outputLists;
    auto ins = inputs;
    return enqueueTransfer("all_gather_coalesced", signatureOfList(OpType::ALLGATHER_COALESCED, ins), flatOutputs, ins, [this, lists, ins]() mutable {
      return algo::allgatherCoalesced(transport_, lists, ins);
    });
  });
}

WorkPtr ProcessGroupQCCL::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return collective("all_gather_into_tensor_coalesced", OpType::ALLGATHER_INTO_TENSOR_COALESCED, [&]() -> WorkPtr {
    OpChecker check("all_gather_into_tensor_coalesced", rank_, size_);
    check.nonEmpty(inputs.size(), "the input list");
    check.count(outputs.size(), inputs.size(), "the output list");
    for (size_t i = 0; i < inputs.size(); ++i) {
      check.tensor(inputs[i], "every input");
      check.tensor(outputs[i], "every output");
      check.sizedLike(outputs[i], inputs[i], size_, "an output");
    }
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto os = s.writes(outputs);
      auto is = s.reads(inputs);
      return b.allgather_into_tensor_coalesced(os, is, opts);
    };
    if (check.onCuda()) {
      return onCuda("all_gather_into_tensor_coalesced", signatureOfList(OpType::ALLGATHER_INTO_TENSOR_COALESCED, inputs), call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    auto outs = outputs;
    auto ins = inputs;
    return enqueueTransfer("all_gather_into_tensor_coalesced", signatureOfList(OpType::ALLGATHER_INTO_TENSOR_COALESCED, ins), outs, ins, [this, outs, ins]() mutable {
      return algo::allgatherIntoTensorCoalesced(transport_, outs, ins);
    });
  });
}

WorkPtr ProcessGroupQCCL::gather(
    std::vector<std::vector<at::Tensor>>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::GatherOptions& opts) {
  return collective("gather", OpType::GATHER, [&]() -> WorkPtr {
    OpChecker check("gather", rank_, size_);
    auto input = check.single(inputs);
    check.rank(opts.rootRank, "root");
    std::vector<at::Tensor> outs;
    if (rank_ == opts.rootRank) {
      outs = check.onePerRank(outputs, input, "output");
    }
    const int64_t root = opts.rootRank;
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto os = s.writes(outputs);
      auto is = s.reads(inputs);
      return b.gather(os, is, opts);
    };
    if (input.is_cuda()) {
      return onCuda("gather", signatureOf(OpType::GATHER, input, -1, root), call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueueTransfer("gather", signatureOf(OpType::GATHER, input, -1, root), outs, {input}, [this, outs, input, root]() mutable {
      return algo::gather(transport_, outs, input, root);
    });
  });
}

WorkPtr ProcessGroupQCCL::scatter(
    std::vector<at::Tensor>& outputs,
    std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ScatterOptions& opts) {
  return collective("scatter", OpType::SCATTER, [&]() -> WorkPtr {
    OpChecker check("scatter", rank_, size_);
    auto output = check.single(outputs);
    check.rank(opts.rootRank, "root");
    std::vector<at::Tensor> ins;
    if (rank_ == opts.rootRank) {
      ins = check.onePerRank(inputs, output, "input");
    }
    const int64_t root = opts.rootRank;
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto os = s.writes(outputs);
      auto is = s.reads(inputs);
      return b.scatter(os, is, opts);
    };
    if (output.is_cuda()) {
      return onCuda("scatter", signatureOf(OpType::SCATTER, output, -1, root), call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueueTransfer("scatter", signatureOf(OpType::SCATTER, output, -1, root), {output}, ins, [this, output, ins, root]() mutable {
      return algo::scatter(transport_, output, ins, root);
    });
  });
}

WorkPtr ProcessGroupQCCL::reduce_scatter(
    std::vector<at::Tensor>& outputs,
    std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  return collective("reduce_scatter", OpType::REDUCE_SCATTER, [&]() -> WorkPtr {
    OpChecker check("reduce_scatter", rank_, size_);
    auto output = check.single(outputs);
    auto ins = check.onePerRank(inputs, output, "input");
    check.reducible(opts.reduceOp, output.scalar_type());
    auto op = opts.reduceOp;
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto os = s.writes(outputs);
      auto is = s.reads(inputs);
      return b.reduce_scatter(os, is, opts);
    };
    if (output.is_cuda()) {
      return onCuda("reduce_scatter", signatureOf(OpType::REDUCE_SCATTER, output, redOp(op)), call, !ncclReduces(op, output.scalar_type()));
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueue("reduce_scatter", signatureOf(OpType::REDUCE_SCATTER, output, redOp(op)), {output}, ins, [this, output, ins, op]() mutable {
      algo::reduceScatter(transport_, output, ins, op);
    });
  });
}

WorkPtr ProcessGroupQCCL::_reduce_scatter_base(
    at::Tensor& output,
    at::Tensor& input,
    const c10d::ReduceScatterOptions& opts) {
  return collective("reduce_scatter_tensor", OpType::_REDUCE_SCATTER_BASE, [&]() -> WorkPtr {
    OpChecker check("reduce_scatter_tensor", rank_, size_);
    check.tensor(input, "the input");
    check.tensor(output, "the output");
    check.sizedLike(input, output, size_, "the input");
    check.reducible(opts.reduceOp, output.scalar_type());
    auto op = opts.reduceOp;
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto o = s.writes(output);
      auto i = s.reads(input);
      return b._reduce_scatter_base(o, i, opts);
    };
    if (check.onCuda()) {
      return onCuda("reduce_scatter_tensor", signatureOf(OpType::_REDUCE_SCATTER_BASE, output, redOp(op)), call, !ncclReduces(op, output.scalar_type()));
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueue("reduce_scatter_tensor", signatureOf(OpType::_REDUCE_SCATTER_BASE, output, redOp(op)), {output}, {input}, [this, output, input, op]() mutable {
      algo::reduceScatterTensor(transport_, output, input, op);
    });
  });
}

WorkPtr ProcessGroupQCCL::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  return collective("reduce_scatter_tensor_coalesced", OpType::REDUCE_SCATTER_TENSOR_COALESCED, [&]() -> WorkPtr {
    OpChecker check("reduce_scatter_tensor_coalesced", rank_, size_);
    check.nonEmpty(inputs.size(), "the input list");
    check.count(outputs.size(), inputs.size(), "the output list");
    for (size_t i = 0; i < inputs.size(); ++i) {
      check.tensor(inputs[i], "every input");
      check.tensor(outputs[i], "every output");
      check.sizedLike(inputs[i], outputs[i], size_, "an input");
      check.reducible(opts.reduceOp, outputs[i].scalar_type());
    }
    auto outs = outputs;
    auto ins = inputs;
    auto op = opts.reduceOp;
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto os = s.writes(outputs);
      auto is = s.reads(inputs);
      return b.reduce_scatter_tensor_coalesced(os, is, opts);
    };
    if (check.onCuda()) {
      return onCuda("reduce_scatter_tensor_coalesced", signatureOfList(OpType::REDUCE_SCATTER_TENSOR_COALESCED, outs, redOp(op)), call, !ncclReduces(op, outputs[0].scalar_type()));
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueue("reduce_scatter_tensor_coalesced", signatureOfList(OpType::REDUCE_SCATTER_TENSOR_COALESCED, outs, redOp(op)), outs, ins, [this, outs, ins, op]() mutable {
      for (size_t i = 0; i < ins.size(); ++i) {
        algo::reduceScatterTensor(transport_, outs[i], ins[i], op);
      }
    });
  });
}

WorkPtr ProcessGroupQCCL::alltoall_base(
    at::Tensor& output,
    at::Tensor& input,
    std::vector<int64_t>& outputSplits,
    std::vector<int64_t>& inputSplits,
    const c10d::AllToAllOptions& opts) {
  return collective("all_to_all_single", OpType::ALLTOALL_BASE, [&]() -> WorkPtr {
    OpChecker check("all_to_all_single", rank_, size_);
    check.tensor(input, "the input");
    check.tensor(output, "the output");
    check.sameDtype(output, input, "the output");
    check.splits(inputSplits, input, "the input");
    check.splits(outputSplits, output, "the output");
    auto outSplits = outputSplits;
    auto inSplits = inputSplits;
    auto signature = signatureOf(OpType::ALLTOALL_BASE, input);
    signature.elements = 0;  // may differ between ranks; the per-peer bytes must match
    signature.sendBytes = splitBytes(input, inSplits, size_);
    signature.recvBytes = splitBytes(output, outSplits, size_);
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto o = s.writes(output);
      auto i = s.reads(input);
      return b.alltoall_base(o, i, outputSplits, inputSplits, opts);
    };
    if (check.onCuda()) {
      return onCuda("all_to_all_single", signature, call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueueTransfer("all_to_all_single", std::move(signature), {output}, {input}, [this, output, input, outSplits, inSplits]() mutable {
      return algo::alltoallSingle(transport_, output, input, outSplits, inSplits);
    });
  });
}

WorkPtr ProcessGroupQCCL::alltoall(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllToAllOptions& opts) {
  return collective("all_to_all", OpType::ALLTOALL, [&]() -> WorkPtr {
    OpChecker check("all_to_all", rank_, size_);
    check.count(inputs.size(), size_, "the input list");
    check.count(outputs.size(), size_, "the output list");
    for (const auto& t : inputs) {
      check.tensor(t, "every input");
      check.sameDtype(t, inputs[0], "an input");
    }
    for (const auto& t : outputs) {
      check.tensor(t, "every output");
      check.sameDtype(t, inputs[0], "an output");
    }
    auto outs = outputs;
    auto ins = inputs;
    auto signature = signatureOf(OpType::ALLTOALL, inputs[0]);
    signature.elements = 0;  // may differ between ranks; the per-peer bytes must match
    for (int peer = 0; peer < size_; ++peer) {
      signature.sendBytes.push_back(byteSize(inputs[peer]));
      signature.recvBytes.push_back(byteSize(outputs[peer]));
    }
    const StagedCall call = [&](c10d::Backend& b, CallStaging& s) {
      auto os = s.writes(outputs);
      auto is = s.reads(inputs);
      return b.alltoall(os, is, opts);
    };
    if (check.onCuda()) {
      return onCuda("all_to_all", signature, call);
    }
    if (check.strided()) {
      return onContiguousCopies(call);
    }
    return enqueueTransfer("all_to_all", std::move(signature), outs, ins, [this, outs, ins]() mutable {
      return algo::alltoall(transport_, outs, ins);
    });
  });
}

WorkPtr ProcessGroupQCCL::barrier(const c10d::BarrierOptions&) {
  return enqueueTransfer("barrier", OpSignature{OpType::BARRIER}, {}, {}, [this] { return algo::barrier(transport_); });
}

// --- point to point ----------------------------------------------------------------------

bool ProcessGroupQCCL::travelsOnNccl(const at::Tensor& tensor) const {
  return tensor.is_cuda() && nccl_ && config_.cudaTransport == Config::CudaTransport::Nccl;
}

void ProcessGroupQCCL::checkPeer(const OpChecker& check, const at::Tensor& tensor, int peer) {
  if (peer != rank_ || !travelsOnNccl(tensor)) {
    check.peer(peer);
    return;
  }
  std::lock_guard<std::mutex> lock(coalescingMutex_);
  QCCL_CHECK_VALUE(
      coalescing_, "rank ", rank_, " can send to or receive from itself only inside batch_isend_irecv, "
      "where NCCL pairs the send with the receive");
}

// Over NCCL, through ncclP2P_ (compressed payloads, settings compared per peer); staged
// through host memory, through the CPU engine (p2p_).
WorkPtr ProcessGroupQCCL::send(std::vector<at::Tensor>& tensors, int dstRank, int tag) {
  OpChecker check("send", rank_, size_);
  auto tensor = check.single(tensors);
  check.contiguous(tensor, "the tensor");
  checkPeer(check, tensor, dstRank);
  if (tensor.is_cuda()) {
    return onCuda("send", std::nullopt, [&](c10d::Backend& b, CallStaging& s) {
      if (s.toHost()) {
        auto ts = s.reads(tensors);
        return b.send(ts, dstRank, tag);
      }
      return ncclP2P_.send(b, tensor, dstRank, tag);
    });
  }
  return track(p2p_.send(tensor, dstRank, tag));
}

WorkPtr ProcessGroupQCCL::recv(std::vector<at::Tensor>& tensors, int srcRank, int tag) {
  OpChecker check("recv", rank_, size_);
  auto tensor = check.single(tensors);
  check.contiguous(tensor, "the tensor");
  checkPeer(check, tensor, srcRank);
  if (tensor.is_cuda()) {
    return onCuda("recv", std::nullopt, [&](c10d::Backend& b, CallStaging& s) {
      if (s.toHost()) {
        auto ts = s.writes(tensors);
        return b.recv(ts, srcRank, tag);
      }
      return ncclP2P_.recv(b, tensor, srcRank, tag);
    });
  }
  return track(p2p_.recv(tensor, srcRank, tag));
}

WorkPtr ProcessGroupQCCL::recvAnysource(std::vector<at::Tensor>& tensors, int tag) {
  OpChecker check("recv", rank_, size_);
  auto tensor = check.single(tensors);
  check.contiguous(tensor, "the tensor");
  if (tensor.is_cuda()) {
    // NCCL has no receive from any source; staged through the host, qccl's p2p engine has.
    return onCuda("recv", std::nullopt, [&](c10d::Backend& b, CallStaging& s) {
      auto ts = s.writes(tensors);
      return b.recvAnysource(ts, tag);
    }, /*needsHost=*/true);
  }
  return track(p2p_.recv(tensor, -1, tag));
}

// --- coalescing ----------------------------------------------------------------------------

void ProcessGroupQCCL::startCoalescing() {
  std::lock_guard<std::mutex> lock(coalescingMutex_);
  QCCL_CHECK_VALUE(!coalescing_, "start_coalescing on rank ", rank_, ": a coalescing window is already open");
  coalescing_ = true;
}

WorkPtr ProcessGroupQCCL::endCoalescing() {
  std::vector<WorkPtr> parts;
  {
    std::lock_guard<std::mutex> lock(coalescingMutex_);
    QCCL_CHECK_VALUE(coalescing_, "end_coalescing on rank ", rank_, ": no coalescing window is open");
    coalescing_ = false;
    parts.swap(coalesced_);
  }
  if (ncclCoalescing_.exchange(false)) {
    c10::intrusive_ptr<c10d::Work> grouped;
    try {
      grouped = nccl_->endCoalescing();
    } catch (...) {
      ncclP2P_.batchEnded(nullptr);
      throw;
    }
    ncclP2P_.batchEnded(grouped);
    if (grouped) {
      parts.push_back(grouped);
    }
  }
  return BatchWork::create(rank_, std::move(parts));
}

void ProcessGroupQCCL::abandonCoalescing() {
  {
    std::lock_guard<std::mutex> lock(coalescingMutex_);
    if (!coalescing_) {
      return;
    }
  }
  // Ends the window as endCoalescing() would (NCCL's too, or its grouped ops would never
  // be issued); nobody waits on the batch, each op keeps its own Work and errors.
  endCoalescing();
}

// --- splitting ----------------------------------------------------------------------------

c10::intrusive_ptr<c10d::Backend::Options> ProcessGroupQCCL::getBackendOptions() {
  // The transport's options (devices, timeout): what a split of it needs.
  return transport_.gloo().getBackendOptions();
}

c10::intrusive_ptr<c10d::Backend> ProcessGroupQCCL::split(
    const c10::intrusive_ptr<c10d::Store>& store,
    const std::vector<int>& ranks,
    const c10::intrusive_ptr<Options>& opts) {
  auto gloo = transport_.gloo().split(store, ranks, opts);
  if (!gloo) {
    return nullptr;  // this rank is not in the new group
  }
  c10::intrusive_ptr<c10d::Backend> nccl;
  if (nccl_) {
    auto ncclOptions = nccl_->getBackendOptions();
    ncclOptions->timeout = opts->timeout;
    nccl = nccl_->split(c10::make_intrusive<c10d::PrefixStore>("qccl/nccl/", store), ranks, ncclOptions);
  }
  return c10::make_intrusive<ProcessGroupQCCL>(
      gloo, gloo->getRank(), gloo->getSize(), opts->timeout, config_, nccl, store);
}

// --- compression state ---------------------------------------------------------------------

void ProcessGroupQCCL::enterExactRegion() {
  exactDepth_.fetch_add(1);
}

void ProcessGroupQCCL::exitExactRegion() {
  if (exactDepth_.fetch_sub(1) <= 0) {
    exactDepth_.fetch_add(1);
    QCCL_CHECK_VALUE(false, "an exact region was exited more often than entered");
  }
}

algo::CompressionState ProcessGroupQCCL::saveCompressionState() {
  queue_.drain();
  return allreduce_.saveState();
}

void ProcessGroupQCCL::loadCompressionState(const algo::CompressionState& state) {
  queue_.drain();
  allreduce_.loadState(state);
}

// --- group state ---------------------------------------------------------------------------

uint64_t ProcessGroupQCCL::getSequenceNumberForGroup() {
  return seq_.load();
}

void ProcessGroupQCCL::setSequenceNumberForGroup() {
  // Sequence numbers start at 0 on every rank; nothing to agree on.
}

void ProcessGroupQCCL::setTimeout(std::chrono::milliseconds timeout) {
  transport_.setTimeout(timeout);
}

void ProcessGroupQCCL::stop(const std::string& why) {
  queue_.stop(makeCommError(why + " (rank " + std::to_string(rank_) + ")"));
  p2p_.shutdown(why);
}

void ProcessGroupQCCL::abort() {
  if (nccl_) {
    nccl_->abort();
  }
  transport_.abort();
  stop("the process group was aborted");
}

void ProcessGroupQCCL::shutdown() {
  if (nccl_) {
    nccl_->shutdown();
  }
  queue_.drain();
  stop("the process group was shut down");
}

} // namespace qccl
