// Point-to-point through an inner backend (p2p/inner_backend_p2p.h), the route of CUDA
// tensors over NCCL. NCCL needs a GPU per rank, so here the inner backend is Gloo on CPU
// tensors, ranks are threads over one HashStore, and the CPU codecs encode: the same
// code as on the GPU up to the codec, which the GPU tests compare with the CPU's byte
// for byte. Expected values come from torch's own casts (fp16, bf16) or from an error
// bound computed in float64 (int8).

#include <gtest/gtest.h>

#include <functional>
#include <mutex>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "qccl/work/work.h"
#include "qccl/common/codec_kind.h"
#include "qccl/p2p/inner_backend_p2p.h"
#include "qccl/transport/gloo_factory.h"
#include "threads_as_ranks.h"

namespace {

using namespace std::chrono_literals;
using qccl::CodecKind;
using qccl::p2p::InnerBackendP2P;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

qccl::Config p2pConfig(CodecKind codec, int64_t block = 64) {
  qccl::Config config;
  config.p2pCodec = codec;
  config.block = block;
  return config;
}

struct Rank {
  int rank;
  c10::intrusive_ptr<c10d::Backend> gloo;
  InnerBackendP2P& p2p;
};

// Two ranks as threads, each with its Gloo backend and its InnerBackendP2P over one store.
void runPair(const std::vector<qccl::Config>& configs, const std::function<void(Rank&)>& body) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  qccl::testing::runAsRanks(2, [&](int rank) {
    auto gloo = qccl::makeGlooBackend(store, rank, 2, 20s);
    InnerBackendP2P p2p(configs.at(rank), rank, store, /*hasInner=*/true);
    Rank me{rank, gloo, p2p};
    body(me);
  });
}

// What rank 1 receives when rank 0 sends `sent` with `config` on both ranks.
at::Tensor sendOnce(const qccl::Config& config, const at::Tensor& sent) {
  at::Tensor got = at::full_like(sent, -7);
  runPair({config, config}, [&](Rank& me) {
    if (me.rank == 0) {
      me.p2p.send(*me.gloo, sent, 1, 3)->wait();
    } else {
      auto work = me.p2p.recv(*me.gloo, got, 0, 3);
      work->wait();
      EXPECT_EQ(work->sourceRank(), 0);
      EXPECT_TRUE(work->isCompleted());
    }
  });
  return got;
}

at::Tensor randomValues(int64_t n, at::ScalarType dtype = at::kFloat) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(17);
  return (at::randn({n}, g, at::TensorOptions().dtype(at::kDouble)) * 3).to(dtype);
}

TEST(InnerBackendP2P, Fp16AndBf16PayloadsArriveAsTorchRoundsThem) {
  const auto sent = randomValues(1001);
  EXPECT_TRUE(at::equal(sendOnce(p2pConfig(CodecKind::Fp16), sent), sent.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(at::equal(sendOnce(p2pConfig(CodecKind::Bf16), sent), sent.to(at::kBFloat16).to(at::kFloat)));

  const auto doubles = randomValues(300, at::kDouble);
  EXPECT_TRUE(at::equal(sendOnce(p2pConfig(CodecKind::Fp16), doubles),
                        doubles.to(at::kFloat).to(at::kHalf).to(at::kDouble)));
}

TEST(InnerBackendP2P, Int8PayloadsArriveWithinHalfAStepOfEachBlock) {
  const int64_t block = 64;
  const auto sent = randomValues(10 * block + 13);
  const auto got = sendOnce(p2pConfig(CodecKind::Int8, block), sent);

  const auto exact = sent.to(at::kDouble);
  const auto error = (got.to(at::kDouble) - exact).abs();
  for (int64_t start = 0; start < sent.numel(); start += block) {
    const int64_t len = std::min(block, sent.numel() - start);
    const double halfStep = exact.narrow(0, start, len).abs().max().item<double>() / 127 / 2;
    EXPECT_LE(error.narrow(0, start, len).max().item<double>(), halfStep * (1 + 1e-6)) << "block at " << start;
  }
  EXPECT_GT(error.max().item<double>(), 0) << "the payload arrived exact: it was not encoded";
}

TEST(InnerBackendP2P, SmallIntegerAndUncompressedPayloadsArriveExactly) {
  const auto small = randomValues(63);  // under one block of 64
  EXPECT_TRUE(at::equal(sendOnce(p2pConfig(CodecKind::Int8), small), small));
  const auto integers = at::arange(500, at::TensorOptions().dtype(at::kLong));
  EXPECT_TRUE(at::equal(sendOnce(p2pConfig(CodecKind::Int8), integers), integers));
  const auto floats = randomValues(500);
  EXPECT_TRUE(at::equal(sendOnce(p2pConfig(CodecKind::None), floats), floats));
}

TEST(InnerBackendP2P, RanksWithOtherP2PSettingsRefuseBeforeSending) {
  for (const auto& configs : {std::vector<qccl::Config>{p2pConfig(CodecKind::Int8), p2pConfig(CodecKind::None)},
                              std::vector<qccl::Config>{p2pConfig(CodecKind::Int8, 64), p2pConfig(CodecKind::Int8, 128)}}) {
    std::mutex mutex;
    std::vector<std::string> errors;
    runPair(configs, [&](Rank& me) {
      auto tensor = randomValues(1000);
      try {
        if (me.rank == 0) {
          me.p2p.send(*me.gloo, tensor, 1, 0)->wait();
        } else {
          me.p2p.recv(*me.gloo, tensor, 0, 0)->wait();
        }
      } catch (const c10::ValueError& e) {
        std::lock_guard<std::mutex> lock(mutex);
        errors.push_back(e.what());
      }
    });
    ASSERT_EQ(errors.size(), 2u) << "both ranks must refuse";
    for (const auto& error : errors) {
      EXPECT_NE(error.find("QCCL_P2P_CODEC=int8"), std::string::npos) << error;
      EXPECT_NE(error.find("must agree"), std::string::npos) << error;
    }
  }
}

TEST(InnerBackendP2P, APeerThatStagesCudaTensorsThroughHostIsReportedAtOnce) {
  auto staged = p2pConfig(CodecKind::None);
  staged.cudaTransport = qccl::Config::CudaTransport::StagedThroughHost;
  runPair({p2pConfig(CodecKind::None), staged}, [&](Rank& me) {
    if (me.rank == 0) {  // rank 1 would never post the matching receive through NCCL
      try {
        me.p2p.send(*me.gloo, randomValues(10), 1, 0);
        ADD_FAILURE() << "the send went out";
      } catch (const c10::ValueError& e) {
        EXPECT_NE(std::string(e.what()).find("rank 1 has QCCL_CUDA_TRANSPORT=gloo"), std::string::npos) << e.what();
      }
    }
  });
}

// An inner backend inside a coalescing window: like NCCL, it returns no Work per op and
// one Work for the batch.
class BatchingBackend : public c10d::Backend {
 public:
  explicit BatchingBackend(c10::intrusive_ptr<c10d::Backend> inner)
      : Backend(inner->getRank(), inner->getSize()), inner_(std::move(inner)) {}
  const std::string getBackendName() const override { return "batching"; }
  WorkPtr send(std::vector<at::Tensor>& tensors, int dst, int tag) override {
    batch_.push_back(inner_->send(tensors, dst, tag));
    return nullptr;
  }
  WorkPtr recv(std::vector<at::Tensor>& tensors, int src, int tag) override {
    batch_.push_back(inner_->recv(tensors, src, tag));
    return nullptr;
  }
  WorkPtr endBatch() {  // a single op per batch is enough here
    EXPECT_EQ(batch_.size(), 1u);
    return batch_.at(0);
  }

 private:
  c10::intrusive_ptr<c10d::Backend> inner_;
  std::vector<WorkPtr> batch_;
};

// A finished Work with no outputs to give, as ProcessGroupNCCL's batch Work.
class NoOutputsWork : public c10d::Work {
 public:
  bool isCompleted() override { return true; }
  bool wait(std::chrono::milliseconds) override { return true; }
  std::vector<at::Tensor> result() override { throw std::logic_error("result() of a batch Work"); }
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override {
    auto future = c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()));
    future->markCompleted(c10::IValue(std::vector<at::Tensor>{}));
    return future;
  }
};

TEST(InnerBackendP2P, ABatchDecodesItsReceivesWhenWaitedOnNotWhenCreated) {
  const auto sent = randomValues(1000);
  runPair({p2pConfig(CodecKind::Fp16), p2pConfig(CodecKind::Fp16)}, [&](Rank& me) {
    BatchingBackend batching(me.gloo);
    if (me.rank == 0) {
      EXPECT_FALSE(me.p2p.send(batching, sent, 1, 0).defined());
      me.p2p.batchEnded(batching.endBatch());
      batching.endBatch()->wait();
      return;
    }
    auto got = at::zeros_like(sent);
    auto work = me.p2p.recv(batching, got, 0, 0);
    ASSERT_TRUE(work.defined());
    EXPECT_FALSE(work->isCompleted());
    me.p2p.batchEnded(batching.endBatch());
    // As ProcessGroupQCCL::endCoalescing builds it: qccl's parts, then the inner batch.
    auto batch = qccl::BatchWork::create(1, {work, c10::make_intrusive<NoOutputsWork>()});
    EXPECT_TRUE(at::equal(got, at::zeros_like(sent))) << "decoded before anyone waited";
    batch->wait();
    const auto want = sent.to(at::kHalf).to(at::kFloat);
    EXPECT_TRUE(at::equal(got, want));
    EXPECT_TRUE(batch->isCompleted());
    got.zero_();
    work->wait();  // a later wait does not decode again
    EXPECT_TRUE(at::equal(got, at::zeros_like(want)));
  });
}

TEST(InnerBackendP2P, WaitingInsideTheWindowIsRefused) {
  runPair({p2pConfig(CodecKind::Fp16), p2pConfig(CodecKind::Fp16)}, [&](Rank& me) {
    BatchingBackend batching(me.gloo);
    auto tensor = randomValues(1000);
    if (me.rank == 0) {
      me.p2p.send(batching, tensor, 1, 0);
      batching.endBatch()->wait();
      return;
    }
    auto work = me.p2p.recv(batching, tensor, 0, 0);
    EXPECT_THROW(work->wait(), c10::ValueError);
    me.p2p.batchEnded(batching.endBatch());
    batching.endBatch()->wait();  // the transfer itself still completes
  });
}

} // namespace
