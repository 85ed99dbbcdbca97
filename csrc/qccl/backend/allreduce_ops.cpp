// all_reduce and all_reduce_coalesced on CPU tensors: each tensor's route (exact or
// compressed, algo/bucketed_allreduce.h), then one queued call, which may ride in its
// check (a small exact one), leave its transfer running (one exact tensor), or run
// together with its compressed neighbours (joint_allreduce.h). CUDA: cuda_route.cpp.

#include <algorithm>

#include <c10/util/hash.h>

#include "qccl/algo/collectives.h"
#include "qccl/algo/exact_allreduce.h"
#include "qccl/algo/local_allreduce.h"
#include "qccl/backend/op_signatures.h"
#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/errors.h"

namespace qccl {

using c10d::OpType;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

WorkPtr ProcessGroupQCCL::allreduce(std::vector<at::Tensor>& tensors, const c10d::AllreduceOptions& opts) {
  return collective("all_reduce", OpType::ALLREDUCE, [&]() -> WorkPtr {
    if (tensors.size() == 1 && tensors[0].defined() && tensors[0].is_sparse()) {
      return sparseAllreduce(tensors[0], opts);
    }
    OpChecker check("all_reduce", rank_, size_);
    auto tensor = check.single(tensors);
    check.reducible(opts.reduceOp, tensor.scalar_type());
    auto signature = signatureOf(OpType::ALLREDUCE, tensor, redOp(opts.reduceOp));
    if (tensor.is_cuda()) {
      return allreduceOnCuda("all_reduce", std::move(signature), {tensor}, opts.reduceOp, [&](c10d::Backend& nccl) {
        return nccl.allreduce(tensors, opts);
      });
    }
    return allreduceList(
        "all_reduce", std::move(signature), {tensor}, opts.reduceOp, CallStaging::modeFor(false, check.strided()));
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
    if (check.onCuda()) {
      return allreduceOnCuda("all_reduce_coalesced", std::move(signature), tensors, opts.reduceOp, [&](c10d::Backend& nccl) {
        return nccl.allreduce_coalesced(tensors, opts);
      });
    }
    return allreduceList(
        "all_reduce_coalesced", std::move(signature), tensors, opts.reduceOp, CallStaging::modeFor(false, check.strided()));
  });
}

// Sparse gradients (DDP with nn.Embedding(sparse=True)): exact, through Gloo's own sparse
// all-reduce, which is what Gloo serves; never compressed.
WorkPtr ProcessGroupQCCL::sparseAllreduce(const at::Tensor& tensor, const c10d::AllreduceOptions& opts) {
  const std::string where = "all_reduce on rank " + std::to_string(rank_) + ": ";
  QCCL_CHECK_VALUE(
      tensor.is_cpu() && tensor.layout() == at::kSparse, where, "a sparse tensor must be a CPU tensor in COO layout, got ",
      tensor.device().str(), " ", tensor.layout());
  QCCL_CHECK_TYPE(
      opts.reduceOp == c10d::ReduceOp::SUM, where, "a sparse tensor can only be reduced with ReduceOp.SUM, as with Gloo");
  // The shape and dtype must match across ranks (the number of entries may differ), and a
  // sparse call must meet a sparse call: dense all_reduces have no layout hash.
  auto signature = signatureOf(OpType::ALLREDUCE, tensor, redOp(opts.reduceOp));
  size_t layout = static_cast<size_t>(tensor.sparse_dim());
  for (int64_t size : tensor.sizes()) {
    layout = c10::hash_combine(layout, static_cast<size_t>(size));
  }
  signature.layoutHash = static_cast<int64_t>(layout | 1);  // never 0
  return track(place("all_reduce", std::move(signature), {tensor}, {}, [this, t = tensor]() mutable {
    algo::sparseAllreduce(transport_, t);
    return std::optional<StartedTransfer>();
  }));
}

std::vector<algo::Route> ProcessGroupQCCL::routeAll(
    const std::vector<at::Tensor>& tensors,
    const c10d::ReduceOp& op,
    OpSignature& signature) const {
  std::vector<algo::Route> routes;
  for (const auto& t : tensors) {
    routes.push_back(allreduce_.route(t, op, insideExact()));
  }
  signature.plan = routePlan(routes);
  return routes;
}

WorkPtr ProcessGroupQCCL::allreduceList(
    const std::string& name,
    OpSignature signature,
    const std::vector<at::Tensor>& callersTensors,
    const c10d::ReduceOp& op,
    CallStaging::Mode mode) {
  CallStaging staging(mode, rank_);
  auto tensors = staging.writes(callersTensors);
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
  auto work = place(name, std::move(signature), tensors, {}, [this, tensors, routes, op, local]() mutable {
    std::optional<StartedTransfer> started;
    allreduce_.run(compressedNet(), tensors, routes, op, [&](std::vector<at::Tensor>& bucket, const c10d::ReduceOp&) {
      if (local && local->hasContributions()) {
        local->finish();
      } else {
        // A call of one tensor (DDP's buckets with an exact route) leaves its transfer on
        // the wire, and its end completes the call.
        started = algo::exactAllreduce(transport_, bucket, op, /*mayLeaveRunning=*/tensors.size() == 1, oneHost_.get());
      }
    }, acrossNodes());
    return started;
  }, local, std::move(joinable));
  return track(staging.finish(work));
}

void ProcessGroupQCCL::allreduceJointly(const std::vector<QueuedOp*>& ops) {
  std::vector<algo::AllreduceCall> calls;
  for (const auto* op : ops) {
    calls.push_back(static_cast<const JoinableAllreduce&>(*op->joinable).call());
  }
  allreduce_.run(compressedNet(), calls, [this](std::vector<at::Tensor>& bucket, const c10d::ReduceOp& op) {
    algo::exactAllreduce(transport_, bucket, op, /*mayLeaveRunning=*/false, oneHost_.get());  // not reached: joinable calls have no exact bucket
  }, acrossNodes());
}

} // namespace qccl
