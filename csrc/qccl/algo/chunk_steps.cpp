#include "qccl/algo/chunk_steps.h"

#include <algorithm>

#include <ATen/ops/empty.h>
#include <ATen/ops/sub.h>

#include "qccl/algo/phase.h"

namespace qccl::algo {

int64_t chunksInFlight(int64_t largestChunk) {
  return std::clamp(kElementsInFlight / std::max<int64_t>(largestChunk, 1), kMinChunksInFlight, kMaxChunksInFlight);
}

void runStaggered(int64_t count, int64_t depth, const std::vector<std::function<void(int64_t item)>>& stages) {
  const int64_t lastStage = static_cast<int64_t>(stages.size()) - 1;
  for (int64_t step = 0; step < count + lastStage * depth; ++step) {
    for (int64_t s = 0; s <= lastStage; ++s) {
      const int64_t item = step - s * depth;
      if (item >= 0 && item < count) {
        stages[s](item);
      }
    }
  }
}

void runWithReceivesAhead(
    int64_t count,
    int64_t depth,
    const std::function<void(int64_t item)>& postReceives,
    const std::vector<std::function<void(int64_t item)>>& stages) {
  for (int64_t i = 0; i < std::min(depth, count); ++i) {
    postReceives(i);
  }
  auto withReceives = stages;
  withReceives[0] = [&](int64_t i) {
    if (i + depth < count) {
      postReceives(i + depth);
    }
    stages[0](i);
  };
  runStaggered(count, depth, withReceives);
}

uint64_t streamSeed(uint64_t seed, int64_t chunk, int rank, int stage) {
  uint64_t s = seed;
  for (uint64_t part : {static_cast<uint64_t>(chunk), static_cast<uint64_t>(rank), static_cast<uint64_t>(stage)}) {
    s = (s ^ part) * 0x100000001B3ull + 0x9E3779B97F4A7C15ull;
  }
  return s;
}

at::Tensor emptyBytes(int64_t n, const at::Tensor& like) {
  return at::empty({n}, like.options().dtype(at::kByte));
}

void encodeWithFeedback(
    const codec::Codec& codec,
    at::Tensor values,
    at::Tensor residual,
    uint8_t* out,
    const codec::EncodeOptions& options) {
  if (residual.defined()) {
    values.add_(residual);
  }
  const int64_t n = values.numel();
  codec.encode(values.data_ptr<float>(), n, out, options);
  if (residual.defined()) {
    codec.decode(out, n, residual.data_ptr<float>());
    at::sub_out(residual, values, residual);
  }
}

void awaitTransfer(
    Transport& net,
    c10::intrusive_ptr<c10d::Work>& work,
    at::Tensor& sent,
    const char* what,
    double& transferSeconds) {
  Phase transfer("qccl:transfer", transferSeconds);
  if (work) {
    net.waitFor(work, what);
    work.reset();
  }
  sent.reset();
}

void awaitTransfers(
    Transport& net,
    std::vector<c10::intrusive_ptr<c10d::Work>>& works,
    at::Tensor& sent,
    const char* what,
    double& transferSeconds) {
  Phase transfer("qccl:transfer", transferSeconds);
  for (auto& work : works) {
    net.waitFor(work, what);
  }
  works.clear();
  sent.reset();
}

} // namespace qccl::algo
