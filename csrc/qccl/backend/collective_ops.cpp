// Every collective but all_reduce (allreduce_ops.cpp): validate on the caller's thread,
// then issue() routes it: CUDA tensors to NCCL, everything else to the worker, on the
// tensors the call's staging gives. Each op's CPU body is one algorithm of
// algo/collectives.h, or for reduce-scatters and all-gathers, compressed or exact as
// algo/sharded_compression.h routes them.

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>

#include "qccl/algo/carried_calls.h"
#include "qccl/algo/collectives.h"
#include "qccl/backend/nccl_capabilities.h"
#include "qccl/backend/op_signatures.h"
#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/errors.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl {

using c10d::OpType;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

WorkPtr ProcessGroupQCCL::broadcast(std::vector<at::Tensor>& tensors, const c10d::BroadcastOptions& opts) {
  return collective("broadcast", OpType::BROADCAST, [&] {
    OpChecker check("broadcast", rank_, size_);
    auto tensor = check.single(tensors);
    check.rank(opts.rootRank, "root");
    const int64_t root = opts.rootRank;
    return issue("broadcast", check, {
        signatureOf(OpType::BROADCAST, tensor, -1, root),
        [&](c10d::Backend& nccl) { return nccl.broadcast(tensors, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto t = s.writes(tensor);
          auto carried = algo::CarriedBroadcast::ifEligible(t, root, size_);
          return {{t}, {}, [this, t, root, carried]() mutable -> std::optional<StartedTransfer> {
            if (carried && carried->hasContributions()) {
              carried->finish();
              return std::nullopt;
            }
            if (oneHost_) {
              oneHost_->broadcast(t, root);
              return std::nullopt;
            }
            return algo::broadcast(transport_, t, root);
          }, carried};
        }});
  });
}

WorkPtr ProcessGroupQCCL::reduce(std::vector<at::Tensor>& tensors, const c10d::ReduceOptions& opts) {
  return collective("reduce", OpType::REDUCE, [&] {
    OpChecker check("reduce", rank_, size_);
    auto tensor = check.single(tensors);
    check.rank(opts.rootRank, "root");
    check.reducible(opts.reduceOp, tensor.scalar_type());
    auto op = opts.reduceOp;
    const int64_t root = opts.rootRank;
    return issue("reduce", check, {
        signatureOf(OpType::REDUCE, tensor, redOp(op), root),
        [&](c10d::Backend& nccl) { return nccl.reduce(tensors, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto t = s.writes(tensor);
          return {{t}, {}, [this, t, op, root]() mutable -> std::optional<StartedTransfer> {
            if (oneHost_) {
              oneHost_->reduce(t, op, root);
              return std::nullopt;
            }
            return algo::reduce(transport_, t, op, root);
          }};
        },
        !ncclReduces(op, tensor.scalar_type())});
  });
}

WorkPtr ProcessGroupQCCL::allgather(
    std::vector<std::vector<at::Tensor>>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return collective("all_gather", OpType::ALLGATHER, [&] {
    OpChecker check("all_gather", rank_, size_);
    auto input = check.single(inputs);
    auto outs = check.onePerRank(outputs, input, "output");
    auto signature = signatureOf(OpType::ALLGATHER, input);
    const auto route = sharded_.allgatherRoute(input, insideExact());
    signature.plan = routePlan({route});
    return issue("all_gather", check, {
        std::move(signature),
        [&](c10d::Backend& nccl) { return nccl.allgather(outputs, inputs, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto os = s.writes(outs);
          auto in = s.reads(input);
          // Gathered into one tensor, as all_gather_into_tensor, then split.
          auto gathered = at::empty({in.numel() * size_}, in.options());
          auto carried = route == algo::Route::Compressed ? nullptr : algo::CarriedAllgather::ifEligible(gathered, in, size_);
          return {os, {in}, [this, os, in, route, gathered, carried]() mutable -> std::optional<StartedTransfer> {
            auto split = [gathered, os, n = in.numel()]() mutable {
              for (size_t r = 0; r < os.size(); ++r) {
                os[r].copy_(gathered.narrow(0, static_cast<int64_t>(r) * n, n).view(os[r].sizes()));
              }
            };
            auto started = sharded_.allgather(transport_, gathered, in, route, oneHost_.get(), carried.get());
            if (!started) {
              split();
              return std::nullopt;
            }
            return std::move(*started).andThen(split);
          }, carried};
        }});
  });
}

WorkPtr ProcessGroupQCCL::_allgather_base(at::Tensor& output, at::Tensor& input, const c10d::AllgatherOptions& opts) {
  return collective("all_gather_into_tensor", OpType::_ALLGATHER_BASE, [&] {
    OpChecker check("all_gather_into_tensor", rank_, size_);
    check.tensor(input, "the input");
    check.tensor(output, "the output");
    check.sizedLike(output, input, size_, "the output");
    auto signature = signatureOf(OpType::_ALLGATHER_BASE, input);
    const auto route = sharded_.allgatherRoute(input, insideExact());
    signature.plan = routePlan({route});
    return issue("all_gather_into_tensor", check, {
        std::move(signature),
        [&](c10d::Backend& nccl) { return nccl._allgather_base(output, input, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto out = s.writes(output);
          auto in = s.reads(input);
          auto carried = route == algo::Route::Compressed ? nullptr : algo::CarriedAllgather::ifEligible(out, in, size_);
          return {{out}, {in}, [this, out, in, route, carried]() mutable {
            return sharded_.allgather(transport_, out, in, route, oneHost_.get(), carried.get());
          }, carried};
        }});
  });
}

WorkPtr ProcessGroupQCCL::allgather_coalesced(
    std::vector<std::vector<at::Tensor>>& outputLists,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return collective("all_gather_coalesced", OpType::ALLGATHER_COALESCED, [&] {
    OpChecker check("all_gather_coalesced", rank_, size_);
    check.nonEmpty(inputs.size(), "the input list");
    check.count(outputLists.size(), size_, "the output list of lists");
    for (const auto& perRank : outputLists) {
      check.count(perRank.size(), inputs.size(), "each output list");
      for (size_t i = 0; i < inputs.size(); ++i) {
        check.tensor(perRank[i], "every output");
        check.sizedLike(perRank[i], inputs[i], 1, "an output");
      }
    }
    for (const auto& t : inputs) {
      check.tensor(t, "every input");
    }
    return issue("all_gather_coalesced", check, {
        signatureOfList(OpType::ALLGATHER_COALESCED, inputs),
        [&](c10d::Backend& nccl) { return nccl.allgather_coalesced(outputLists, inputs, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto lists = s.writes(outputLists);
          auto ins = s.reads(inputs);
          std::vector<at::Tensor> flat;
          for (const auto& perRank : lists) {
            flat.insert(flat.end(), perRank.begin(), perRank.end());
          }
          return {flat, ins, [this, lists, ins]() mutable { return algo::allgatherCoalesced(transport_, lists, ins, oneHost_.get()); }};
        }});
  });
}

WorkPtr ProcessGroupQCCL::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return collective("all_gather_into_tensor_coalesced", OpType::ALLGATHER_INTO_TENSOR_COALESCED, [&] {
    OpChecker check("all_gather_into_tensor_coalesced", rank_, size_);
    check.nonEmpty(inputs.size(), "the input list");
    check.count(outputs.size(), inputs.size(), "the output list");
    for (size_t i = 0; i < inputs.size(); ++i) {
      check.tensor(inputs[i], "every input");
      check.tensor(outputs[i], "every output");
      check.sizedLike(outputs[i], inputs[i], size_, "an output");
    }
    return issue("all_gather_into_tensor_coalesced", check, {
        signatureOfList(OpType::ALLGATHER_INTO_TENSOR_COALESCED, inputs),
        [&](c10d::Backend& nccl) { return nccl.allgather_into_tensor_coalesced(outputs, inputs, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto outs = s.writes(outputs);
          auto ins = s.reads(inputs);
          return {outs, ins, [this, outs, ins]() mutable {
            return algo::allgatherIntoTensorCoalesced(transport_, outs, ins, oneHost_.get());
          }};
        }});
  });
}

WorkPtr ProcessGroupQCCL::gather(
    std::vector<std::vector<at::Tensor>>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::GatherOptions& opts) {
  return collective("gather", OpType::GATHER, [&] {
    OpChecker check("gather", rank_, size_);
    auto input = check.single(inputs);
    check.rank(opts.rootRank, "root");
    std::vector<at::Tensor> outs;
    if (rank_ == opts.rootRank) {
      outs = check.onePerRank(outputs, input, "output");
    }
    const int64_t root = opts.rootRank;
    return issue("gather", check, {
        signatureOf(OpType::GATHER, input, -1, root),
        [&](c10d::Backend& nccl) { return nccl.gather(outputs, inputs, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto os = s.writes(outs);
          auto in = s.reads(input);
          return {os, {in}, [this, os, in, root]() mutable -> std::optional<StartedTransfer> {
            if (oneHost_) {
              oneHost_->gather(os, in, root);
              return std::nullopt;
            }
            return algo::gather(transport_, os, in, root);
          }};
        }});
  });
}

WorkPtr ProcessGroupQCCL::scatter(
    std::vector<at::Tensor>& outputs,
    std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ScatterOptions& opts) {
  return collective("scatter", OpType::SCATTER, [&] {
    OpChecker check("scatter", rank_, size_);
    auto output = check.single(outputs);
    check.rank(opts.rootRank, "root");
    std::vector<at::Tensor> ins;
    if (rank_ == opts.rootRank) {
      ins = check.onePerRank(inputs, output, "input");
    }
    const int64_t root = opts.rootRank;
    return issue("scatter", check, {
        signatureOf(OpType::SCATTER, output, -1, root),
        [&](c10d::Backend& nccl) { return nccl.scatter(outputs, inputs, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto out = s.writes(output);
          auto is = s.reads(ins);
          return {{out}, is, [this, out, is, root]() mutable -> std::optional<StartedTransfer> {
            if (oneHost_) {
              oneHost_->scatter(out, is, root);
              return std::nullopt;
            }
            return algo::scatter(transport_, out, is, root);
          }};
        }});
  });
}

WorkPtr ProcessGroupQCCL::reduce_scatter(
    std::vector<at::Tensor>& outputs,
    std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  return collective("reduce_scatter", OpType::REDUCE_SCATTER, [&] {
    OpChecker check("reduce_scatter", rank_, size_);
    auto output = check.single(outputs);
    auto ins = check.onePerRank(inputs, output, "input");
    check.reducible(opts.reduceOp, output.scalar_type());
    auto op = opts.reduceOp;
    auto signature = signatureOf(OpType::REDUCE_SCATTER, output, redOp(op));
    const auto route = sharded_.reduceScatterRoute(output, op, insideExact());
    signature.plan = routePlan({route});
    const int64_t place = sharded_.nextPlaceInStep();
    return issue("reduce_scatter", check, {
        std::move(signature),
        [&](c10d::Backend& nccl) { return nccl.reduce_scatter(outputs, inputs, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto out = s.writes(output);
          auto is = s.reads(ins);
          return {{out}, is, [this, out, is, op, route, place]() mutable -> std::optional<StartedTransfer> {
            std::vector<at::Tensor> rows;
            for (const auto& t : is) {
              rows.push_back(t.reshape({-1}));
            }
            sharded_.reduceScatter(transport_, out, at::cat(rows), op, route, place, acrossNodes(), oneHost_.get());
            return std::nullopt;
          }};
        },
        !ncclReduces(op, output.scalar_type())});
  });
}

WorkPtr ProcessGroupQCCL::_reduce_scatter_base(
    at::Tensor& output,
    at::Tensor& input,
    const c10d::ReduceScatterOptions& opts) {
  return collective("reduce_scatter_tensor", OpType::_REDUCE_SCATTER_BASE, [&] {
    OpChecker check("reduce_scatter_tensor", rank_, size_);
    check.tensor(input, "the input");
    check.tensor(output, "the output");
    check.sizedLike(input, output, size_, "the input");
    check.reducible(opts.reduceOp, output.scalar_type());
    auto op = opts.reduceOp;
    auto signature = signatureOf(OpType::_REDUCE_SCATTER_BASE, output, redOp(op));
    const auto route = sharded_.reduceScatterRoute(output, op, insideExact());
    signature.plan = routePlan({route});
    const int64_t place = sharded_.nextPlaceInStep();
    return issue("reduce_scatter_tensor", check, {
        std::move(signature),
        [&](c10d::Backend& nccl) { return nccl._reduce_scatter_base(output, input, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto out = s.writes(output);
          auto in = s.reads(input);
          // Not across nodes: the hierarchical stages are not Gloo's order.
          auto carried = route == algo::Route::Compressed || acrossNodes()
              ? nullptr
              : algo::CarriedReduceScatter::ifEligible(out, in, op, rank_, size_);
          return {{out}, {in}, [this, out, in, op, route, place, carried]() mutable -> std::optional<StartedTransfer> {
            sharded_.reduceScatter(transport_, out, in, op, route, place, acrossNodes(), oneHost_.get(), carried.get());
            return std::nullopt;
          }, carried};
        },
        !ncclReduces(op, output.scalar_type())});
  });
}

WorkPtr ProcessGroupQCCL::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  return collective("reduce_scatter_tensor_coalesced", OpType::REDUCE_SCATTER_TENSOR_COALESCED, [&] {
    OpChecker check("reduce_scatter_tensor_coalesced", rank_, size_);
    check.nonEmpty(inputs.size(), "the input list");
    check.count(outputs.size(), inputs.size(), "the output list");
    for (size_t i = 0; i < inputs.size(); ++i) {
      check.tensor(inputs[i], "every input");
      check.tensor(outputs[i], "every output");
      check.sizedLike(inputs[i], outputs[i], size_, "an input");
      check.reducible(opts.reduceOp, outputs[i].scalar_type());
    }
    auto op = opts.reduceOp;
    auto signature = signatureOfList(OpType::REDUCE_SCATTER_TENSOR_COALESCED, outputs, redOp(op));
    std::vector<algo::Route> routes;
    std::vector<int64_t> places;
    for (const auto& out : outputs) {
      routes.push_back(sharded_.reduceScatterRoute(out, op, insideExact()));
      places.push_back(sharded_.nextPlaceInStep());
    }
    signature.plan = routePlan(routes);
    return issue("reduce_scatter_tensor_coalesced", check, {
        std::move(signature),
        [&](c10d::Backend& nccl) { return nccl.reduce_scatter_tensor_coalesced(outputs, inputs, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto outs = s.writes(outputs);
          auto ins = s.reads(inputs);
          return {outs, ins, [this, outs, ins, op, routes, places]() mutable -> std::optional<StartedTransfer> {
            for (size_t i = 0; i < ins.size(); ++i) {
              sharded_.reduceScatter(transport_, outs[i], ins[i], op, routes[i], places[i], acrossNodes(), oneHost_.get());
            }
            return std::nullopt;
          }};
        },
        !ncclReduces(op, outputs[0].scalar_type())});
  });
}

WorkPtr ProcessGroupQCCL::alltoall_base(
    at::Tensor& output,
    at::Tensor& input,
    std::vector<int64_t>& outputSplits,
    std::vector<int64_t>& inputSplits,
    const c10d::AllToAllOptions& opts) {
  return collective("all_to_all_single", OpType::ALLTOALL_BASE, [&] {
    OpChecker check("all_to_all_single", rank_, size_);
    check.tensor(input, "the input");
    check.tensor(output, "the output");
    check.sameDtype(output, input, "the output");
    check.splits(inputSplits, input, "the input");
    check.splits(outputSplits, output, "the output");
    auto signature = signatureOf(OpType::ALLTOALL_BASE, input);
    signature.elements = 0;  // may differ between ranks; the per-peer bytes must match
    signature.sendBytes = splitBytes(input, inputSplits, size_);
    signature.recvBytes = splitBytes(output, outputSplits, size_);
    return issue("all_to_all_single", check, {
        std::move(signature),
        [&](c10d::Backend& nccl) { return nccl.alltoall_base(output, input, outputSplits, inputSplits, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto out = s.writes(output);
          auto in = s.reads(input);
          return {{out}, {in}, [this, out, in, outSplits = outputSplits, inSplits = inputSplits]() mutable {
            return algo::alltoallSingle(transport_, out, in, outSplits, inSplits, oneHost_.get());
          }};
        }});
  });
}

WorkPtr ProcessGroupQCCL::alltoall(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllToAllOptions& opts) {
  return collective("all_to_all", OpType::ALLTOALL, [&] {
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
    auto signature = signatureOf(OpType::ALLTOALL, inputs[0]);
    signature.elements = 0;  // may differ between ranks; the per-peer bytes must match
    for (int peer = 0; peer < size_; ++peer) {
      signature.sendBytes.push_back(byteSize(inputs[peer]));
      signature.recvBytes.push_back(byteSize(outputs[peer]));
    }
    return issue("all_to_all", check, {
        std::move(signature),
        [&](c10d::Backend& nccl) { return nccl.alltoall(outputs, inputs, opts); },
        [&](CallStaging& s) -> CpuCall {
          auto outs = s.writes(outputs);
          auto ins = s.reads(inputs);
          return {outs, ins, [this, outs, ins]() mutable { return algo::alltoall(transport_, outs, ins, oneHost_.get()); }};
        }});
  });
}

WorkPtr ProcessGroupQCCL::barrier(const c10d::BarrierOptions&) {
  return track(place("barrier", OpSignature{OpType::BARRIER}, {}, {}, [this]() -> std::optional<StartedTransfer> {
    // The cross-rank check passes a call only once every rank's record of it arrived:
    // every rank has entered this barrier, so the check was the barrier.
    if (config_.verifyAcrossRanks) {
      return std::nullopt;
    }
    if (oneHost_) {
      oneHost_->barrier();
      return std::nullopt;
    }
    return algo::barrier(transport_);
  }));
}

void ProcessGroupQCCL::monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks) {
  auto work = place("monitored_barrier", OpSignature{OpType::BARRIER}, {}, {}, [this, opts, waitAllRanks] {
    try {
      transport_.gloo().monitoredBarrier(opts, waitAllRanks);
    } catch (...) {
      // The ranks that called it have used Gloo tags the others have not: no later call
      // of this group would pair up. The error fails the group (callFailed), on every rank.
      throwCommError(failureMessage("monitored_barrier", rank_, std::current_exception()));  // keeps Gloo's words
    }
    return std::optional<StartedTransfer>();
  }, nullptr, nullptr, /*checked=*/false);
  work->wait();
}

} // namespace qccl
