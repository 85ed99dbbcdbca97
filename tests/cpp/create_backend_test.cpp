// The public C++ API (qccl/qccl.h) end to end: several ranks as threads of this process,
// each creating its backend with qccl::createBackend over one HashStore, so the real
// Gloo transport carries every byte. Expected values are computed independently, in
// float64 from each rank's known inputs.

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <set>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "qccl/qccl.h"
#include "threads_as_ranks.h"

namespace {

using namespace std::chrono_literals;
using Backend = c10::intrusive_ptr<c10d::Backend>;

// Runs `body(rank, backend)` on `size` threads, one rank each, over one store.
void runRanks(int size, const qccl::Options& options, const std::function<void(int, Backend&)>& body) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  qccl::testing::runAsRanks(size, [&](int rank) {
    auto backend = qccl::createBackend(store, rank, size, options);
    body(rank, backend);
    backend->shutdown();
  });
}

qccl::Options quick() {
  qccl::Options options;
  options.timeout = 20s;
  return options;
}

at::TensorOptions f64() {
  return at::TensorOptions().dtype(at::kDouble);
}

// Rank r's input to the collectives below: distinct per rank and per element.
at::Tensor inputOf(int rank, int64_t n) {
  return at::arange(n, f64()) * 0.5 + (rank + 1) * 10.0;
}

void expectEqual(const at::Tensor& actual, const at::Tensor& expected, const std::string& what) {
  EXPECT_TRUE(at::allclose(actual.to(at::kDouble), expected, 0, 0)) << what << "\nactual " << actual
                                                                    << "\nexpected " << expected;
}

class EveryCollective : public ::testing::TestWithParam<int> {};

TEST_P(EveryCollective, MatchesValuesComputedFromEveryRanksInput) {
  const int size = GetParam();
  const int64_t n = 5;
  at::Tensor sum = at::zeros({n}, f64());
  for (int r = 0; r < size; ++r) {
    sum += inputOf(r, n);
  }
  runRanks(size, quick(), [&](int rank, Backend& pg) {
    const auto floats = at::TensorOptions().dtype(at::kFloat);
    auto mine = inputOf(rank, n).to(at::kFloat);

    std::vector<at::Tensor> t{mine.clone()};
    pg->allreduce(t)->wait();
    expectEqual(t[0], sum, "allreduce SUM");

    t = {mine.clone()};
    c10d::AllreduceOptions maxOp;
    maxOp.reduceOp = c10d::ReduceOp::MAX;
    pg->allreduce(t, maxOp)->wait();
    expectEqual(t[0], inputOf(size - 1, n), "allreduce MAX");

    std::vector<at::Tensor> pair{mine.clone(), mine.clone() * 2};
    pg->allreduce_coalesced(pair)->wait();
    expectEqual(pair[1], sum * 2, "allreduce_coalesced");

    t = {mine.clone()};
    c10d::BroadcastOptions fromLast;
    fromLast.rootRank = size - 1;
    pg->broadcast(t, fromLast)->wait();
    expectEqual(t[0], inputOf(size - 1, n), "broadcast");

    t = {mine.clone()};
    c10d::ReduceOptions toZero;
    pg->reduce(t, toZero)->wait();
    if (rank == 0) {
      expectEqual(t[0], sum, "reduce");
    }

    std::vector<std::vector<at::Tensor>> gathered(1);
    for (int r = 0; r < size; ++r) {
      gathered[0].push_back(at::empty({n}, floats));
    }
    std::vector<at::Tensor> in{mine};
    pg->allgather(gathered, in)->wait();
    for (int r = 0; r < size; ++r) {
      expectEqual(gathered[0][r], inputOf(r, n), "allgather");
    }

    auto flat = at::empty({size * n}, floats);
    pg->_allgather_base(flat, mine)->wait();
    expectEqual(flat.view({size, n})[size - 1], inputOf(size - 1, n), "_allgather_base");

    // reduce_scatter: rank r receives the sum of every rank's r-th chunk.
    auto chunks = mine.repeat({size});
    auto chunk = at::empty({n}, floats);
    pg->_reduce_scatter_base(chunk, chunks)->wait();
    expectEqual(chunk, sum, "_reduce_scatter_base");

    // Uneven alltoall: rank r sends (r + 1) copies of value 100 * r + dest to each dest.
    std::vector<int64_t> sendSplits(size, rank + 1), recvSplits;
    std::vector<at::Tensor> sendParts, expectedParts;
    for (int peer = 0; peer < size; ++peer) {
      sendParts.push_back(at::full({rank + 1}, 100.0 * rank + peer, floats));
      recvSplits.push_back(peer + 1);
      expectedParts.push_back(at::full({peer + 1}, 100.0 * peer + rank, f64()));
    }
    auto sendBuffer = at::cat(sendParts);
    auto recvBuffer = at::empty({size * (size + 1) / 2}, floats);
    pg->alltoall_base(recvBuffer, sendBuffer, recvSplits, sendSplits)->wait();
    expectEqual(recvBuffer, at::cat(expectedParts), "alltoall_base (uneven)");

    std::vector<std::vector<at::Tensor>> gatherOut(rank == 0 ? 1 : 0);
    if (rank == 0) {
      for (int r = 0; r < size; ++r) {
        gatherOut[0].push_back(at::empty({n}, floats));
      }
    }
    c10d::GatherOptions gatherToZero;
    pg->gather(gatherOut, in, gatherToZero)->wait();
    if (rank == 0) {
      expectEqual(gatherOut[0][size - 1], inputOf(size - 1, n), "gather");
    }

    std::vector<at::Tensor> scatterOut{at::empty({n}, floats)};
    std::vector<std::vector<at::Tensor>> scatterIn(rank == 0 ? 1 : 0);
    if (rank == 0) {
      for (int r = 0; r < size; ++r) {
        scatterIn[0].push_back(inputOf(r, n).to(at::kFloat));
      }
    }
    pg->scatter(scatterOut, scatterIn, c10d::ScatterOptions())->wait();
    expectEqual(scatterOut[0], inputOf(rank, n), "scatter");

    // A ring of point-to-point messages: each rank receives its left neighbour's input.
    std::vector<at::Tensor> sent{mine.clone()};
    std::vector<at::Tensor> received{at::empty({n}, floats)};
    auto sendWork = pg->send(sent, (rank + 1) % size, 7);
    pg->recv(received, (rank + size - 1) % size, 7)->wait();
    sendWork->wait();
    expectEqual(received[0], inputOf((rank + size - 1) % size, n), "send/recv");

    pg->barrier()->wait();
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, EveryCollective, ::testing::Values(2, 3));

TEST(CompressedAllreduce, IsBitIdenticalAcrossRanksAndCloseToTheExactSum) {
  const int size = 3;
  const int64_t n = 100003;  // odd, and far above min_bytes: the compressed route
  std::vector<at::Tensor> inputs, outputs(size);
  for (int r = 0; r < size; ++r) {
    inputs.push_back(at::randn({n}, at::TensorOptions().dtype(at::kFloat)));
  }
  qccl::Options options = quick();
  options.codec = qccl::codecs::kInt8;
  runRanks(size, options, [&](int rank, Backend& pg) {
    std::vector<at::Tensor> t{inputs[rank].clone()};
    pg->allreduce(t)->wait();
    outputs[rank] = t[0];
  });
  for (int r = 1; r < size; ++r) {
    EXPECT_TRUE(at::equal(outputs[r], outputs[0])) << "rank " << r << " differs from rank 0";
  }
  at::Tensor exact = at::zeros({n}, f64());
  for (const auto& input : inputs) {
    exact += input.to(at::kDouble);
  }
  const auto error = (outputs[0].to(at::kDouble) - exact).abs().max().item<double>();
  // Two int8 stages, each off by at most half a step (absmax / 127) per contribution.
  const double bound = (size + 1) * exact.abs().max().item<double>() / 127;
  EXPECT_LE(error, bound);
  EXPECT_GT(error, 0) << "int8 left the sum exact: the compressed route was not taken";
}

TEST(Options, SettingsUsePythonsKeysAndOnlyTheFieldsThatAreSet) {
  qccl::Options options{.codec = "fp16", .minBytes = 1024, .errorFeedback = true};
  const std::map<std::string, std::string> expected{
      {"codec", "fp16"}, {"min_bytes", "1024"}, {"error_feedback", "1"}};
  EXPECT_EQ(options.settings(), expected);
}

// Options and codec_names.h spell out by hand what the settings table (common/config.cpp)
// and the codec list (common/codec_kind.cpp) define: these keep them in step.
TEST(Options, EveryFieldIsASettingAndEverySettingAField) {
  const qccl::Options all{
      .codec = "none", .block = 64, .minBytes = 0, .errorFeedback = false, .stochastic = false,
      .bucketBytes = 1 << 20, .errorFeedbackMaxBytes = 0, .verify = true, .forceNetwork = false,
      .p2pCodec = "none", .cudaTransport = "gloo", .allgatherCodec = "none", .ranksPerNode = 1};
  std::set<std::string> fields, settings;
  for (const auto& [key, value] : all.settings()) {
    fields.insert(key);
  }
  for (const auto& [key, value] : all.resolved()) {
    settings.insert(key);
  }
  EXPECT_EQ(fields, settings);
}

TEST(Options, ThePublicCodecNamesAreExactlyTheOnesQcclAccepts) {
  const std::vector<std::string> names{
      qccl::codecs::kNone, qccl::codecs::kFp16, qccl::codecs::kBf16, qccl::codecs::kInt8, qccl::codecs::kInt4};
  std::string listed;
  for (const auto& name : names) {
    EXPECT_EQ(qccl::Options{.codec = name}.resolved().at("codec"), name);
    listed += (listed.empty() ? "" : ", ") + name;
  }
  try {
    qccl::Options{.codec = "int3"}.resolved();
    FAIL() << "an unknown codec was accepted";
  } catch (const c10::ValueError& error) {
    EXPECT_NE(std::string(error.what()).find("use one of " + listed), std::string::npos) << error.what();
  }
}

TEST(Options, EnvironmentSuppliesDefaultsAndFieldsWin) {
  setenv("QCCL_CODEC", "bf16", 1);
  setenv("QCCL_BLOCK", "64", 1);
  const auto fromEnvironment = qccl::Options{}.resolved();
  const auto overridden = qccl::Options{.codec = "int4"}.resolved();
  unsetenv("QCCL_CODEC");
  unsetenv("QCCL_BLOCK");
  EXPECT_EQ(fromEnvironment.at("codec"), "bf16");
  EXPECT_EQ(overridden.at("codec"), "int4");
  EXPECT_EQ(overridden.at("block"), "64");
}

TEST(CreateBackend, RefusesInvalidOptionsBeforeConnecting) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  try {
    qccl::createBackend(store, 0, 2, qccl::Options{.codec = "int3"});
    FAIL() << "an unknown codec was accepted";
  } catch (const c10::ValueError& error) {
    EXPECT_NE(std::string(error.what()).find("qccl: "), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("int3"), std::string::npos) << error.what();
  }
  EXPECT_THROW(qccl::createBackend(store, 2, 2, quick()), c10::ValueError);
  EXPECT_THROW(qccl::createBackend(nullptr, 0, 1, quick()), c10::ValueError);
}

TEST(CreateBackend, APeerThatNeverComesFailsWithinTheTimeout) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  qccl::Options options;
  options.timeout = 1s;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(qccl::createBackend(store, 0, 2, options), c10::DistBackendError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
}

TEST(CreateBackend, NamesItselfQccl) {
  runRanks(1, quick(), [](int, Backend& pg) { EXPECT_EQ(pg->getBackendName(), qccl::kBackendName); });
}

} // namespace
