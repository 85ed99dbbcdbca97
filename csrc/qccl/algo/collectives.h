#pragma once

// Every collective qccl serves on CPU tensors, written against the Gloo transport.
// Each function runs on the process group's worker thread and raises on failure.
// Arguments were validated by the backend. Those that return a StartedTransfer make one
// Gloo call and return without waiting for it, so the worker can start the group's next
// call while this one is on the wire; the others block until the result is in place.
//
// Data movement (data_movement.cpp) sends raw bytes, so every dtype works; reductions
// (reductions.cpp) go through reduce_lowering.h.

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/transport/gloo_transport.h"
#include "qccl/transport/started_transfer.h"

namespace qccl::algo {

class OneHost;

// --- data movement -------------------------------------------------------------------
StartedTransfer broadcast(GlooTransport& net, at::Tensor& tensor, int64_t root);
StartedTransfer allgatherIntoTensor(GlooTransport& net, at::Tensor& output, const at::Tensor& input);
// Those taking a `oneHost` run through it when the group has one (done on return: no
// StartedTransfer), else over Gloo.
// outputs[i] receives every rank's inputs[i] (i.e. outputs[i] = all ranks' copies).
std::optional<StartedTransfer> allgatherIntoTensorCoalesced(
    GlooTransport& net,
    std::vector<at::Tensor>& outputs,
    const std::vector<at::Tensor>& inputs,
    OneHost* oneHost);
// outputLists[r][i] receives rank r's inputs[i].
std::optional<StartedTransfer> allgatherCoalesced(
    GlooTransport& net,
    std::vector<std::vector<at::Tensor>>& outputLists,
    const std::vector<at::Tensor>& inputs,
    OneHost* oneHost);
// `outputs` is used on the root only.
StartedTransfer gather(GlooTransport& net, std::vector<at::Tensor>& outputs, const at::Tensor& input, int64_t root);
// `inputs` is used on the root only.
StartedTransfer scatter(GlooTransport& net, at::Tensor& output, const std::vector<at::Tensor>& inputs, int64_t root);
// Splits count rows of dim 0; empty splits mean equal parts.
std::optional<StartedTransfer> alltoallSingle(
    GlooTransport& net,
    at::Tensor& output,
    const at::Tensor& input,
    const std::vector<int64_t>& outputSplits,
    const std::vector<int64_t>& inputSplits,
    OneHost* oneHost);
std::optional<StartedTransfer> alltoall(
    GlooTransport& net,
    std::vector<at::Tensor>& outputs,
    const std::vector<at::Tensor>& inputs,
    OneHost* oneHost);
StartedTransfer barrier(GlooTransport& net);

// --- reductions ----------------------------------------------------------------------
void allreduce(GlooTransport& net, at::Tensor& tensor, const c10d::ReduceOp& op);
// The same, returning once Gloo has the transfer: `then` completes it into `tensor`. A
// large buffer takes qccl's deep pipeline instead (deep_reduction.h), done on return.
std::optional<StartedTransfer> startAllreduce(GlooTransport& net, const at::Tensor& tensor, const c10d::ReduceOp& op);
// A sparse COO tensor, SUM: Gloo's own sparse all-reduce (every rank's indices and values
// gathered, then summed), so the result is Gloo's to the bit. `tensor` is replaced by
// the coalesced sum in place.
void sparseAllreduce(GlooTransport& net, at::Tensor& tensor);
// Fuses the tensors (per dtype) into one buffer, so n small tensors cost one collective;
// through `oneHost` when the group has it (the same fused buffer, so the same bits).
void allreduceCoalesced(
    GlooTransport& net,
    std::vector<at::Tensor>& tensors,
    const c10d::ReduceOp& op,
    OneHost* oneHost = nullptr);
// Leaves `tensor` unchanged on every rank but the root.
StartedTransfer reduce(GlooTransport& net, at::Tensor& tensor, const c10d::ReduceOp& op, int64_t root);
// Gloo's bits; a large input takes qccl's deep pipeline (deep_reduction.h), which sends
// half the bytes of Gloo's (an all-reduce of the whole input).
void reduceScatterTensor(GlooTransport& net, at::Tensor& output, const at::Tensor& input, const c10d::ReduceOp& op);

} // namespace qccl::algo
