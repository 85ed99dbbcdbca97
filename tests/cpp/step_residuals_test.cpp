// The reduce-scatters' error-feedback keys (algo/step_residuals.h) and the staggered
// schedule every compressed collective runs its chunks on (algo/chunk_steps.h).

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "qccl/algo/chunk_steps.h"
#include "qccl/algo/step_residuals.h"

namespace {

using qccl::algo::StepResiduals;

const c10::Device kCpu(c10::kCPU);

TEST(StepResiduals, PlacesCountTheCallsOfAStepAndStartOverAtTheNext) {
  StepResiduals residuals(1 << 20);
  qccl::algo::markStep();
  EXPECT_EQ(residuals.nextPlace(), 0);
  EXPECT_EQ(residuals.nextPlace(), 1);
  EXPECT_EQ(residuals.nextPlace(), 2);
  qccl::algo::markStep();
  EXPECT_EQ(residuals.nextPlace(), 0);
  EXPECT_EQ(residuals.nextPlace(), 1);
}

TEST(StepResiduals, EachPlaceKeepsItsOwnResidual) {
  StepResiduals residuals(1 << 20);
  auto first = residuals.lookup(0, 100, kCpu);
  auto second = residuals.lookup(1, 100, kCpu);
  ASSERT_TRUE(first.defined() && second.defined());
  EXPECT_TRUE(at::equal(first, at::zeros({100})));
  first.fill_(1.0);
  second.fill_(2.0);
  EXPECT_TRUE(at::equal(residuals.lookup(0, 100, kCpu), at::full({100}, 1.0)));
  EXPECT_TRUE(at::equal(residuals.lookup(1, 100, kCpu), at::full({100}, 2.0)));
  // A place that reduces a tensor of another size now starts from zeros.
  EXPECT_TRUE(at::equal(residuals.lookup(0, 50, kCpu), at::zeros({50})));
}

TEST(StepResiduals, BeyondTheMemoryBoundACallKeepsNoResidual) {
  StepResiduals residuals(100 * sizeof(float));
  EXPECT_TRUE(residuals.lookup(0, 100, kCpu).defined());
  EXPECT_FALSE(residuals.lookup(1, 1, kCpu).defined());
  EXPECT_TRUE(residuals.lookup(0, 100, kCpu).defined());  // the one it holds stays
}

TEST(StepResiduals, SaveAndLoadKeepEveryResidualAtItsPlace) {
  StepResiduals original(1 << 20);
  original.lookup(3, 10, kCpu).fill_(3.0);
  original.lookup(7, 20, kCpu).fill_(7.0);
  std::vector<int64_t> places;
  std::vector<at::Tensor> saved;
  original.save(places, saved);
  EXPECT_EQ(places, (std::vector<int64_t>{3, 7}));

  StepResiduals restored(1 << 20);
  restored.load(places, saved);
  EXPECT_TRUE(at::equal(restored.lookup(3, 10, kCpu), at::full({10}, 3.0)));
  EXPECT_TRUE(at::equal(restored.lookup(7, 20, kCpu), at::full({20}, 7.0)));
}

TEST(ChunkSteps, StageSOfItemIRunsAtStepIPlusSTimesDepthInStepOrder) {
  std::vector<std::pair<int64_t, int>> ran;  // (item, stage) in the order they ran
  std::vector<std::function<void(int64_t)>> stages;
  for (int s = 0; s < 3; ++s) {
    stages.push_back([&ran, s](int64_t item) { ran.emplace_back(item, s); });
  }
  qccl::algo::runStaggered(5, 2, stages);

  std::vector<std::pair<int64_t, int>> expected;
  for (int64_t step = 0; step < 5 + 2 * 2; ++step) {
    for (int s = 0; s < 3; ++s) {
      const int64_t item = step - s * 2;
      if (item >= 0 && item < 5) {
        expected.emplace_back(item, s);
      }
    }
  }
  EXPECT_EQ(ran, expected);
  EXPECT_EQ(ran.size(), 15u);
}

} // namespace
