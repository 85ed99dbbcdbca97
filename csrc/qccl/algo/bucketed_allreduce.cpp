#include "qccl/algo/bucketed_allreduce.h"

#include <ATen/ops/empty.h>

#include "qccl/algo/compressed_allreduce.h"
#include "qccl/algo/phase.h"
#include "qccl/bucket/bucket_plan.h"
#include "qccl/codec/codec_on_device.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl::algo {
namespace {

// Bytes a ring allreduce (reduce-scatter + allgather) sends per rank, uncompressed.
int64_t exactWireBytes(int64_t bytes, int ranks) {
  return ranks > 1 ? 2 * bytes * (ranks - 1) / ranks : 0;
}

// The bucket's tensors as one flat float32 buffer. A single contiguous float32 tensor is
// used in place.
at::Tensor packFloat32(const std::vector<at::Tensor>& tensors) {
  if (tensors.size() == 1 && tensors[0].scalar_type() == at::kFloat) {
    return tensors[0].view({-1});
  }
  int64_t total = 0;
  for (const auto& t : tensors) {
    total += t.numel();
  }
  auto buffer = at::empty({total}, tensors[0].options().dtype(at::kFloat));
  int64_t offset = 0;
  for (const auto& t : tensors) {
    buffer.narrow(0, offset, t.numel()).copy_(t.reshape({-1}));
    offset += t.numel();
  }
  return buffer;
}

void unpackFloat32(const at::Tensor& buffer, std::vector<at::Tensor>& tensors) {
  if (tensors.size() == 1 && tensors[0].is_alias_of(buffer)) {
    return;
  }
  int64_t offset = 0;
  for (auto& t : tensors) {
    t.view({-1}).copy_(buffer.narrow(0, offset, t.numel()));
    offset += t.numel();
  }
}

} // namespace

BucketedAllreduce::BucketedAllreduce(const Config& config, int ranks)
    : config_(config),
      ranks_(ranks),
      codec_(codec::makeCodec(config.codec, config.block)),
      residuals_(config.errorFeedbackMaxBytes) {}

Route BucketedAllreduce::route(const at::Tensor& tensor, const c10d::ReduceOp& op, bool forcedExact) const {
  if (!codec_) {
    return Route::ExactCodecNone;
  }
  if (forcedExact) {
    return Route::ExactForced;
  }
  if (!compressibleDtype(tensor.scalar_type())) {
    return Route::ExactDtype;
  }
  if (op.op_ != c10d::ReduceOp::SUM && op.op_ != c10d::ReduceOp::AVG) {
    return Route::ExactReduceOp;
  }
  const int64_t bytes = byteSize(tensor);
  if (bytes < config_.minBytes || tensor.numel() == 0) {
    return Route::ExactSmall;
  }
  // Every shard is padded to whole blocks and carries its scales, so a tensor of a few
  // elements (a logged scalar) would send many times its exact bytes, and a float16 or
  // bfloat16 tensor gains nothing from a 16-bit codec. One rank sends nothing either way
  // and compresses as configured: it quantizes like a larger group, and on one GPU it is
  // how the CUDA path gets tested.
  if (ranks_ > 1 && compressedWireBytes(*codec_, tensor.numel(), ranks_) >= exactWireBytes(bytes, ranks_)) {
    return Route::ExactNoSaving;
  }
  return Route::Compressed;
}

void BucketedAllreduce::run(
    Transport& net,
    std::vector<at::Tensor>& tensors,
    const std::vector<Route>& routes,
    const c10d::ReduceOp& op,
    const ExactReduce& exact,
    const NodeTransports* nodes) {
  std::vector<AllreduceCall> calls{{tensors, routes, op}};
  run(net, calls, exact, nodes);
}

void BucketedAllreduce::run(
    Transport& net,
    std::vector<AllreduceCall>& calls,
    const ExactReduce& exact,
    const NodeTransports* nodes) {
  StatsSnapshot delta;
  delta.calls = static_cast<int64_t>(calls.size());
  // Every compressed bucket of every call, reduced together at the end.
  std::vector<CompressedJob> jobs;
  std::vector<std::vector<at::Tensor>> jobMembers;

  for (auto& call : calls) {
    auto& tensors = call.tensors;
    delta.tensors += static_cast<int64_t>(tensors.size());
    // Compressed tensors of every float dtype share buckets (they travel as float32);
    // exact ones are grouped by dtype, the unit Gloo reduces.
    constexpr int64_t kCompressedGroup = -1;
    std::vector<bucket::Item> items;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const int64_t bytes = byteSize(tensors[i]);
      const bool compressed = call.routes[i] == Route::Compressed;
      items.push_back({bytes, compressed ? kCompressedGroup : static_cast<int64_t>(tensors[i].scalar_type())});
      delta.tensorsByRoute[static_cast<size_t>(call.routes[i])] += 1;
      delta.compressedTensors += compressed ? 1 : 0;
      delta.logicalBytes += bytes;
      delta.exactWireBytes += exactWireBytes(bytes, net.size());
    }

    for (const auto& b : bucket::planBuckets(items, config_.bucketBytes)) {
      std::vector<at::Tensor> members;
      for (size_t i : b.items) {
        members.push_back(tensors[i]);
      }
      if (b.group == kCompressedGroup) {
        jobs.push_back(compressedJob(members, call.op.op_ == c10d::ReduceOp::AVG, nodes, delta));
        jobMembers.push_back(std::move(members));
        continue;
      }
      {
        Phase transfer("qccl:transfer", delta.communicateSeconds);
        exact(members, call.op);
      }
      delta.wireBytes += exactWireBytes(b.bytes, net.size());
    }
  }

  if (!jobs.empty()) {
    auto onDevice = codec::makeCodecOn(jobs[0].buffer.device(), codec_->kind(), codec_->block());
    if (nodes) {
      hierarchicalAllreduce(*nodes, *onDevice, jobs, delta);
    } else {
      compressedAllreduce(net, *onDevice, jobs, delta);
    }
    Phase unpacking("qccl:decode", delta.decodeSeconds);
    for (size_t j = 0; j < jobs.size(); ++j) {
      unpackFloat32(jobs[j].buffer, jobMembers[j]);
    }
  }
  stats_.add(delta);
}

CompressedJob BucketedAllreduce::compressedJob(
    const std::vector<at::Tensor>& tensors,
    bool average,
    const NodeTransports* nodes,
    StatsSnapshot& stats) {
  CompressedJob job;
  {
    Phase packing("qccl:encode", stats.encodeSeconds);
    job.buffer = packFloat32(tensors);
  }
  job.options.average = average;
  job.options.stochastic = config_.stochastic;
  job.options.seed = static_cast<uint64_t>(calls_.fetch_add(1));
  if (config_.errorFeedback) {
    const int64_t n = job.buffer.numel();
    job.options.residual = residuals_.lookup(tensors, nodes ? nodePieceElements(n, nodes->ranksPerNode()) : n,
                                             job.buffer.device());
  }
  return job;
}

void BucketedAllreduce::saveInto(CompressionState& state) const {
  state.calls = calls_.load();
  state.residuals = residuals_.save();
}

void BucketedAllreduce::loadFrom(const CompressionState& state) {
  calls_.store(state.calls);
  residuals_.load(state.residuals);
}

} // namespace qccl::algo
