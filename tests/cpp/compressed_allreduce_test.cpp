// The compressed all-reduce over many chunks (algo/compressed_allreduce.h), ranks as
// threads over the real Gloo transport, against the algorithm of docs/algorithms.md
// written out sequentially below: the same shards, the same float32 sums in rank order,
// the same two quantization stages, so the result must match bit for bit whatever the
// pipeline does. Chunks of 1024 elements make a 20000-element buffer 20 chunks, more than
// the pipeline keeps in flight, so every branch of the chunk pipeline runs, with pairwise
// transfers (receives posted ahead, Gloo's path) and with collectives. The codecs
// themselves are checked against the Python oracle (test_codec_reference.py).

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "qccl/algo/compressed_allreduce.h"
#include "qccl/codec/codec.h"
#include "qccl/transport/gloo_factory.h"
#include "qccl/transport/gloo_transport.h"
#include "threads_as_ranks.h"

namespace {

using qccl::CodecKind;
using qccl::codec::Codec;

constexpr int64_t kChunk = 1024;
constexpr int64_t kBlock = 64;

at::Tensor inputOf(int rank, int64_t n, int variant) {
  auto i = at::arange(n, at::TensorOptions().dtype(at::kFloat));
  return at::sin(i * 0.37 + rank * 1.3 + variant) * (1 + rank) + (i.remainder(97) == 0).to(at::kFloat) * 40;
}

at::Tensor encoded(const Codec& codec, const at::Tensor& values) {
  auto bytes = at::empty({codec.encodedBytes(values.numel())}, at::TensorOptions().dtype(at::kByte));
  codec.encode(values.data_ptr<float>(), values.numel(), bytes.data_ptr<uint8_t>(), {});
  return bytes;
}

at::Tensor decoded(const Codec& codec, const at::Tensor& bytes, int64_t n) {
  auto values = at::empty({n}, at::TensorOptions().dtype(at::kFloat));
  codec.decode(bytes.data_ptr<uint8_t>(), n, values.data_ptr<float>());
  return values;
}

// One call for every rank at once. `residuals` (one per rank, or empty) are used and
// updated as error feedback does. Returns the result every rank must hold.
at::Tensor sequentialReference(
    const Codec& codec,
    const std::vector<at::Tensor>& inputs,
    std::vector<at::Tensor>& residuals,
    bool average) {
  const int ranks = static_cast<int>(inputs.size());
  const int64_t n = inputs[0].numel();
  auto result = at::empty({n}, inputs[0].options());
  for (int64_t offset = 0; offset < n; offset += kChunk) {
    const int64_t length = std::min(kChunk, n - offset);
    const int64_t blocks = (length + codec.block() - 1) / codec.block();
    const int64_t shardElements = (blocks + ranks - 1) / ranks * codec.block();
    for (int owner = 0; owner < ranks; ++owner) {
      const int64_t begin = std::min(length, owner * shardElements);
      const int64_t size = std::min(length, (owner + 1) * shardElements) - begin;
      auto part = [&](const at::Tensor& t) { return t.narrow(0, offset + begin, size); };
      auto sum = at::zeros({size}, inputs[0].options());
      for (int r = 0; r < ranks; ++r) {
        if (r == owner) {
          sum.add_(part(inputs[r]));
          continue;
        }
        auto values = part(inputs[r]).clone();
        if (!residuals.empty()) {
          values.add_(part(residuals[r]));
        }
        auto bytes = encoded(codec, values);
        codec.decodeAdd(bytes.data_ptr<uint8_t>(), size, sum.data_ptr<float>());
        if (!residuals.empty()) {
          part(residuals[r]).copy_(values - decoded(codec, bytes, size));
        }
      }
      if (average) {
        sum.div_(ranks);
      }
      if (!residuals.empty()) {
        sum.add_(part(residuals[owner]));
      }
      auto out = decoded(codec, encoded(codec, sum), size);
      if (!residuals.empty()) {
        part(residuals[owner]).copy_(sum - out);
      }
      part(result).copy_(out);
    }
  }
  return result;
}

struct Case {
  CodecKind kind;
  int64_t n;
  bool errorFeedback;
  bool average;
};

std::vector<Case> cases() {
  std::vector<Case> all;
  for (auto kind : {CodecKind::Fp16, CodecKind::Bf16, CodecKind::Int8, CodecKind::Int4}) {
    for (int64_t n : {int64_t{1}, int64_t{777}, int64_t{5003}, int64_t{20000}}) {
      all.push_back({kind, n, false, false});
      all.push_back({kind, n, true, true});
    }
  }
  return all;
}

std::string describe(const Case& c, int ranks, int step) {
  return std::string(qccl::codecName(c.kind)) + " n=" + std::to_string(c.n) + " ranks=" + std::to_string(ranks) +
      (c.errorFeedback ? " with error feedback" : "") + (c.average ? " AVG" : " SUM") + " step " + std::to_string(step);
}

// The Gloo transport with its pairwise transfers turned off: the path of transports
// that exchange through collectives (NCCL's), on CPU.
class CollectivesOnly : public qccl::Transport {
 public:
  explicit CollectivesOnly(qccl::GlooTransport& gloo) : gloo_(gloo) {}
  c10d::Backend& backend() override {
    return gloo_.backend();
  }
  int rank() const override {
    return gloo_.rank();
  }
  int size() const override {
    return gloo_.size();
  }
  void waitFor(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) override {
    gloo_.waitFor(work, what);
  }

 private:
  qccl::GlooTransport& gloo_;
};

// (ranks, pairwise transfers or collectives)
class CompressedSweep : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(CompressedSweep, EveryChunkMatchesTheSequentialAlgorithmBitForBit) {
  const auto [ranks, pairwise] = GetParam();
  const auto all = cases();
  constexpr int kSteps = 2;  // error feedback carries its residual into the second step
  // results[case][step][rank]
  std::vector<std::vector<std::vector<at::Tensor>>> results(
      all.size(), std::vector<std::vector<at::Tensor>>(kSteps, std::vector<at::Tensor>(ranks)));
  auto store = c10::make_intrusive<c10d::HashStore>();
  qccl::testing::runAsRanks(ranks, [&](int rank) {
    qccl::GlooTransport gloo(qccl::makeGlooBackend(store, rank, ranks, std::chrono::seconds(60)), std::chrono::seconds(60));
    CollectivesOnly collectives(gloo);
    qccl::Transport& net = pairwise ? static_cast<qccl::Transport&>(gloo) : collectives;
    ASSERT_EQ(net.postsReceivesAhead(), pairwise);
    for (size_t i = 0; i < all.size(); ++i) {
      const auto& c = all[i];
      auto codec = qccl::codec::makeCodec(c.kind, kBlock);
      qccl::algo::CompressedAllreduceOptions options;
      options.chunkElements = kChunk;
      options.average = c.average;
      if (c.errorFeedback) {
        options.residual = at::zeros({c.n}, at::TensorOptions().dtype(at::kFloat));
      }
      for (int step = 0; step < kSteps; ++step) {
        auto buffer = inputOf(rank, c.n, step);
        qccl::algo::StatsSnapshot stats;
        qccl::algo::compressedAllreduce(net, *codec, buffer, options, stats);
        results[i][step][rank] = buffer;
      }
    }
  });
  for (size_t i = 0; i < all.size(); ++i) {
    const auto& c = all[i];
    auto codec = qccl::codec::makeCodec(c.kind, kBlock);
    std::vector<at::Tensor> residuals;
    for (int r = 0; c.errorFeedback && r < ranks; ++r) {
      residuals.push_back(at::zeros({c.n}, at::TensorOptions().dtype(at::kFloat)));
    }
    for (int step = 0; step < kSteps; ++step) {
      std::vector<at::Tensor> inputs;
      for (int r = 0; r < ranks; ++r) {
        inputs.push_back(inputOf(r, c.n, step));
      }
      const auto expected = sequentialReference(*codec, inputs, residuals, c.average);
      for (int r = 0; r < ranks; ++r) {
        ASSERT_TRUE(at::equal(results[i][step][r], expected))
            << describe(c, ranks, step) << ", rank " << r << (pairwise ? ", pairwise" : ", collectives");
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, CompressedSweep, ::testing::Combine(::testing::Values(2, 3, 4), ::testing::Bool()));

// Several buffers in one pipeline (a joint run of DDP's buckets) give each buffer's
// result alone, residuals included.
TEST(CompressedJointRun, EachBufferGetsItsOwnResultAndResidual) {
  const int ranks = 3;
  const std::vector<int64_t> sizes{5003, 20000, 777};
  auto codec = qccl::codec::makeCodec(CodecKind::Int8, kBlock);
  std::vector<std::vector<at::Tensor>> results(sizes.size(), std::vector<at::Tensor>(ranks));
  std::vector<std::vector<at::Tensor>> residualsAfter(sizes.size(), std::vector<at::Tensor>(ranks));
  auto store = c10::make_intrusive<c10d::HashStore>();
  qccl::testing::runAsRanks(ranks, [&](int rank) {
    qccl::GlooTransport net(qccl::makeGlooBackend(store, rank, ranks, std::chrono::seconds(60)), std::chrono::seconds(60));
    std::vector<qccl::algo::CompressedJob> jobs;
    for (size_t b = 0; b < sizes.size(); ++b) {
      qccl::algo::CompressedJob job{inputOf(rank, sizes[b], static_cast<int>(b)), {}};
      job.options.chunkElements = kChunk;
      job.options.residual = at::zeros({sizes[b]}, at::TensorOptions().dtype(at::kFloat));
      jobs.push_back(job);
    }
    qccl::algo::StatsSnapshot stats;
    qccl::algo::compressedAllreduce(net, *codec, jobs, stats);
    for (size_t b = 0; b < sizes.size(); ++b) {
      results[b][rank] = jobs[b].buffer;
      residualsAfter[b][rank] = jobs[b].options.residual;
    }
  });
  for (size_t b = 0; b < sizes.size(); ++b) {
    std::vector<at::Tensor> inputs, residuals;
    for (int r = 0; r < ranks; ++r) {
      inputs.push_back(inputOf(r, sizes[b], static_cast<int>(b)));
      residuals.push_back(at::zeros({sizes[b]}, at::TensorOptions().dtype(at::kFloat)));
    }
    const auto expected = sequentialReference(*codec, inputs, residuals, false);
    for (int r = 0; r < ranks; ++r) {
      ASSERT_TRUE(at::equal(results[b][r], expected)) << "buffer " << b << ", rank " << r;
      ASSERT_TRUE(at::equal(residualsAfter[b][r], residuals[r])) << "residual of buffer " << b << ", rank " << r;
    }
  }
}

} // namespace
