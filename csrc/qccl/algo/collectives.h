#pragma once

// Every collective qccl serves on CPU tensors, written against the Gloo transport.
// Each function runs on the process group's worker thread, blocks until the result is in
// its output tensors, and raises on failure. Arguments were validated by the backend.
//
// Data movement (data_movement.cpp) sends raw bytes, so every dtype works; reductions
// (reductions.cpp) go through reduce_lowering.h.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/transport/gloo_transport.h"
#include "qccl/transport/started_transfer.h"

namespace qccl::algo {

// --- data movement -------------------------------------------------------------------
void broadcast(GlooTransport& net, at::Tensor& tensor, int64_t root);
void allgather(GlooTransport& net, std::vector<at::Tensor>& outputs, const at::Tensor& input);
void allgatherIntoTensor(GlooTransport& net, at::Tensor& output, const at::Tensor& input);
// outputs[i] receives every rank's inputs[i] (i.e. outputs[i] = all ranks' copies).
void allgatherIntoTensorCoalesced(
    GlooTransport& net,
    std::vector<at::Tensor>& outputs,
    const std::vector<at::Tensor>& inputs);
// outputLists[r][i] receives rank r's inputs[i].
void allgatherCoalesced(
    GlooTransport& net,
    std::vector<std::vector<at::Tensor>>& outputLists,
    const std::vector<at::Tensor>& inputs);
// `outputs` is used on the root only.
void gather(GlooTransport& net, std::vector<at::Tensor>& outputs, const at::Tensor& input, int64_t root);
// `inputs` is used on the root only.
void scatter(GlooTransport& net, at::Tensor& output, const std::vector<at::Tensor>& inputs, int64_t root);
// Splits count rows of dim 0; empty splits mean equal parts.
void alltoallSingle(
    GlooTransport& net,
    at::Tensor& output,
    const at::Tensor& input,
    const std::vector<int64_t>& outputSplits,
    const std::vector<int64_t>& inputSplits);
void alltoall(GlooTransport& net, std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& inputs);
void barrier(GlooTransport& net);

// --- reductions ----------------------------------------------------------------------
void allreduce(GlooTransport& net, at::Tensor& tensor, const c10d::ReduceOp& op);
// The same, returning once Gloo has the transfer: `then` completes it into `tensor`.
StartedTransfer startAllreduce(GlooTransport& net, const at::Tensor& tensor, const c10d::ReduceOp& op);
// Fuses the tensors (per dtype) into one buffer, so n small tensors cost one collective.
void allreduceCoalesced(GlooTransport& net, std::vector<at::Tensor>& tensors, const c10d::ReduceOp& op);
// Leaves `tensor` unchanged on every rank but the root.
void reduce(GlooTransport& net, at::Tensor& tensor, const c10d::ReduceOp& op, int64_t root);
// `inputs` holds one tensor per rank, each shaped like `output`.
void reduceScatter(
    GlooTransport& net,
    at::Tensor& output,
    const std::vector<at::Tensor>& inputs,
    const c10d::ReduceOp& op);
void reduceScatterTensor(GlooTransport& net, at::Tensor& output, const at::Tensor& input, const c10d::ReduceOp& op);

} // namespace qccl::algo
