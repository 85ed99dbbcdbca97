// ProcessGroupQCCL end to end at world size 1 over a loopback transport: every op's
// validation, queueing, lowering and Work/future plumbing, plus timeout and abort.

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "fake_backends.h"
#include "qccl/backend/process_group_qccl.h"

namespace {

using namespace std::chrono_literals;
using qccl::ProcessGroupQCCL;

c10::intrusive_ptr<ProcessGroupQCCL> loopbackGroup(std::chrono::milliseconds timeout = 10s) {
  return c10::make_intrusive<ProcessGroupQCCL>(
      c10::make_intrusive<qccl::testing::LoopbackBackend>(), 0, 1, timeout);
}

TEST(ProcessGroup, ReportsItsName) {
  EXPECT_EQ(loopbackGroup()->getBackendName(), "qccl");
}

TEST(ProcessGroup, PremulSumScalesAndTheFutureHoldsTheOutput) {
  auto pg = loopbackGroup();
  auto t = at::arange(6, at::TensorOptions().dtype(at::kFloat));
  std::vector<at::Tensor> tensors{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::makePreMulSum(3.0);
  auto work = pg->allreduce(tensors, opts);
  auto future = work->getFuture();
  future->wait();
  auto value = future->value();
  ASSERT_TRUE(value.isTensorList());
  auto out = value.toTensorList().get(0);
  EXPECT_TRUE(out.is_same(t));  // in place, as DDP expects
  EXPECT_TRUE(at::equal(t, at::arange(6, at::TensorOptions().dtype(at::kFloat)) * 3));
}

TEST(ProcessGroup, Int16AllreduceWorksThoughGlooLacksInt16) {
  auto pg = loopbackGroup();
  auto t = at::arange(-3, 3, at::TensorOptions().dtype(at::kShort));
  auto expected = t.clone();
  std::vector<at::Tensor> tensors{t};
  pg->allreduce(tensors)->wait();
  EXPECT_TRUE(at::equal(t, expected));
}

TEST(ProcessGroup, GatherFamilyMovesEveryDtype) {
  auto pg = loopbackGroup();
  for (auto dtype : {at::kShort, at::kComplexFloat, at::kBool, at::kBFloat16}) {
    auto input = at::ones({5}, at::TensorOptions().dtype(dtype));
    auto out = at::zeros({5}, at::TensorOptions().dtype(dtype));
    std::vector<std::vector<at::Tensor>> outputs{{out}};
    std::vector<at::Tensor> inputs{input};
    pg->allgather(outputs, inputs)->wait();
    EXPECT_TRUE(at::equal(out, input)) << dtype;

    auto flat = at::zeros({5}, at::TensorOptions().dtype(dtype));
    pg->_allgather_base(flat, input)->wait();
    EXPECT_TRUE(at::equal(flat, input)) << dtype;
  }
}

TEST(ProcessGroup, CoalescedAllreduceHandlesMixedDtypes) {
  auto pg = loopbackGroup();
  std::vector<at::Tensor> tensors{
      at::full({3}, 2.0), at::full({2}, 4, at::TensorOptions().dtype(at::kLong)), at::full({4}, 6.0)};
  c10d::AllreduceCoalescedOptions opts;
  opts.reduceOp = c10d::ReduceOp::AVG;  // world size 1: unchanged
  pg->allreduce_coalesced(tensors, opts)->wait();
  EXPECT_TRUE(at::equal(tensors[0], at::full({3}, 2.0)));
  EXPECT_TRUE(at::equal(tensors[1], at::full({2}, 4, at::TensorOptions().dtype(at::kLong))));
  EXPECT_TRUE(at::equal(tensors[2], at::full({4}, 6.0)));
}

template <typename Error, typename Fn>
void expectQcclError(Fn fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning " << fragment;
  } catch (const Error& e) {
    const std::string message = e.what_without_backtrace();
    EXPECT_EQ(message.rfind("qccl: ", 0), 0u) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

TEST(ProcessGroup, BadInputRaisesAtTheCallSite) {
  auto pg = loopbackGroup();
  expectQcclError<c10::ValueError>(
      [&] {
        std::vector<std::vector<at::Tensor>> outputs{{at::zeros({4})}};
        std::vector<at::Tensor> inputs{at::ones({3})};
        pg->allgather(outputs, inputs);
      },
      "all_gather on rank 0: an output has 4 elements, expected 3");
  expectQcclError<c10::TypeError>(
      [&] {
        std::vector<at::Tensor> tensors{at::ones({3})};
        c10d::AllreduceOptions opts;
        opts.reduceOp = c10d::ReduceOp::BXOR;
        pg->allreduce(tensors, opts);
      },
      "BXOR");
  expectQcclError<c10::ValueError>(
      [&] {
        std::vector<at::Tensor> tensors{at::ones({1}).expand({4})};  // one element, four views of it
        pg->broadcast(tensors);
      },
      "share memory");
  expectQcclError<c10::ValueError>(
      [&] {
        std::vector<at::Tensor> tensors;
        pg->allreduce_coalesced(tensors);
      },
      "must not be empty");
  expectQcclError<c10::ValueError>(
      [&] {
        std::vector<at::Tensor> tensors{at::ones({2})};
        c10d::BroadcastOptions opts;
        opts.rootRank = 3;
        pg->broadcast(tensors, opts);
      },
      "root 3 is not a rank");
  expectQcclError<c10::ValueError>(
      [&] {
        auto out = at::zeros({4});
        auto in = at::ones({4});
        std::vector<int64_t> outSplits{3};
        std::vector<int64_t> inSplits{4};
        pg->alltoall_base(out, in, outSplits, inSplits);
      },
      "split sizes add up to 3 rows but it has 4");
}

TEST(ProcessGroup, AStuckCollectiveTimesOut) {
  auto pg = c10::make_intrusive<ProcessGroupQCCL>(
      c10::make_intrusive<qccl::testing::StuckBackend>(), 0, 1, 300ms);
  std::vector<at::Tensor> tensors{at::ones({2})};
  auto work = pg->allreduce(tensors);
  expectQcclError<c10::DistBackendError>([&] { work->wait(); }, ": Timed out after 300 ms");
  EXPECT_TRUE(work->getFuture()->hasError());
}

TEST(ProcessGroup, AbortWakesAWaiterAtOnce) {
  auto pg = c10::make_intrusive<ProcessGroupQCCL>(
      c10::make_intrusive<qccl::testing::StuckBackend>(), 0, 1, std::chrono::milliseconds(600000));
  std::vector<at::Tensor> tensors{at::ones({2})};
  auto stuck = pg->allreduce(tensors);
  std::vector<at::Tensor> more{at::ones({2})};
  auto queued = pg->allreduce(more);
  const auto start = std::chrono::steady_clock::now();
  std::thread aborter([&] { pg->abort(); });
  expectQcclError<c10::DistBackendError>([&] { stuck->wait(); }, "abort");
  expectQcclError<c10::DistBackendError>([&] { queued->wait(); }, "abort");
  aborter.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(ProcessGroup, SequenceNumbersCountCollectives) {
  auto pg = loopbackGroup();
  EXPECT_EQ(pg->getSequenceNumberForGroup(), 0u);
  pg->barrier()->wait();
  std::vector<at::Tensor> tensors{at::ones({1})};
  pg->allreduce(tensors)->wait();
  EXPECT_EQ(pg->getSequenceNumberForGroup(), 2u);
}

} // namespace
