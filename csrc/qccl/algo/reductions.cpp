#include "qccl/algo/collectives.h"
#include "qccl/algo/one_host.h"

#include <map>

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>

#include "qccl/algo/deep_reduction.h"
#include "qccl/algo/reduce_lowering.h"

namespace qccl::algo {
namespace {

// Gloo reduces `wire` in place with the lowered op (or, for a large buffer, qccl's deep
// pipeline: the same bits).
void glooAllreduce(GlooTransport& net, at::Tensor& wire, c10d::ReduceOp::RedOpType op, const char* what) {
  if (goesDeep(net, wire, op)) {
    deepAllreduce(net, wire, op);
    return;
  }
  std::vector<at::Tensor> tensors{wire};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp(op);
  net.waitFor(net.gloo().allreduce(tensors, opts), what);
}

} // namespace

std::optional<StartedTransfer> startAllreduce(GlooTransport& net, const at::Tensor& tensor, const c10d::ReduceOp& op) {
  const auto lowered = lowerReduction(op, tensor.scalar_type(), "all_reduce");
  auto wire = toWire(lowered, tensor);
  if (goesDeep(net, wire, lowered.wireOp)) {
    deepAllreduce(net, wire, lowered.wireOp);
    at::Tensor output = tensor;  // a handle: the result goes into the caller's storage
    fromWire(lowered, wire, output, net.size());
    return std::nullopt;
  }
  std::vector<at::Tensor> tensors{wire};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp(lowered.wireOp);
  auto work = net.gloo().allreduce(tensors, opts);
  return StartedTransfer{
      work,
      [lowered, wire, output = tensor, ranks = net.size()]() mutable { fromWire(lowered, wire, output, ranks); },
      net.timeout()};
}

void sparseAllreduce(GlooTransport& net, at::Tensor& tensor) {
  std::vector<at::Tensor> tensors{tensor};
  net.waitFor(net.gloo().allreduce(tensors, c10d::AllreduceOptions()), "all_reduce (sparse)");
}

void allreduce(GlooTransport& net, at::Tensor& tensor, const c10d::ReduceOp& op) {
  if (auto started = startAllreduce(net, tensor, op)) {
    net.waitFor(started->work, "all_reduce");
    started->then();
  }
}

void allreduceCoalesced(
    GlooTransport& net,
    std::vector<at::Tensor>& tensors,
    const c10d::ReduceOp& op,
    OneHost* oneHost) {
  // One fused buffer per dtype, in order of first appearance: the same on every rank
  // because every rank passes the same list.
  std::vector<at::ScalarType> order;
  std::map<at::ScalarType, std::vector<at::Tensor*>> groups;
  for (auto& t : tensors) {
    auto& group = groups[t.scalar_type()];
    if (group.empty()) {
      order.push_back(t.scalar_type());
    }
    group.push_back(&t);
  }
  for (auto type : order) {
    const auto lowered = lowerReduction(op, type, "all_reduce_coalesced");
    std::vector<at::Tensor> wires;
    for (at::Tensor* t : groups[type]) {
      wires.push_back(toWire(lowered, *t).reshape({-1}));
    }
    auto fused = at::cat(wires);
    if (oneHost) {
      oneHost->allreduceWire(fused, lowered.wireOp, "all_reduce_coalesced");
    } else {
      glooAllreduce(net, fused, lowered.wireOp, "all_reduce_coalesced");
    }
    int64_t offset = 0;
    for (size_t i = 0; i < wires.size(); ++i) {
      const int64_t n = wires[i].numel();
      fromWire(lowered, fused.narrow(0, offset, n), *groups[type][i], net.size());
      offset += n;
    }
  }
}

StartedTransfer reduce(GlooTransport& net, at::Tensor& tensor, const c10d::ReduceOp& op, int64_t root) {
  const auto lowered = lowerReduction(op, tensor.scalar_type(), "reduce");
  // Gloo may use a non-root's buffer as scratch space; NCCL leaves it untouched, so
  // non-roots reduce a copy.
  const bool isRoot = net.rank() == root;
  auto wire = toWire(lowered, tensor);
  if (!isRoot && wire.is_alias_of(tensor)) {
    wire = wire.clone();
  }
  std::vector<at::Tensor> tensors{wire};
  c10d::ReduceOptions opts;
  opts.reduceOp = c10d::ReduceOp(lowered.wireOp);
  opts.rootRank = root;
  opts.rootTensor = 0;
  auto work = net.gloo().reduce(tensors, opts);
  return {work,
          [lowered, wire, output = tensor, isRoot, ranks = net.size()]() mutable {
            if (isRoot) {
              fromWire(lowered, wire, output, ranks);
            }
          },
          net.timeout()};
}

void reduceScatterTensor(GlooTransport& net, at::Tensor& output, const at::Tensor& input, const c10d::ReduceOp& op) {
  const auto lowered = lowerReduction(op, input.scalar_type(), "reduce_scatter");
  auto wireIn = toWire(lowered, input.contiguous()).reshape({-1});
  auto wireOut = at::empty({wireIn.numel() / net.size()}, wireIn.options());
  if (goesDeep(net, wireIn, lowered.wireOp)) {
    deepReduceScatter(net, wireOut, wireIn, lowered.wireOp);  // reads the input only
  } else {
    // Gloo reduces the input in place as scratch: keep the caller's input intact.
    if (wireIn.is_alias_of(input)) {
      wireIn = wireIn.clone();
    }
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = c10d::ReduceOp(lowered.wireOp);
    net.waitFor(net.gloo()._reduce_scatter_base(wireOut, wireIn, opts), "reduce_scatter");
  }
  fromWire(lowered, wireOut, output, net.size());
}

} // namespace qccl::algo
