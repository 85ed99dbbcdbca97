#include <gtest/gtest.h>

#include "qccl/bucket/bucket_plan.h"

namespace qccl::bucket {
namespace {

std::vector<std::vector<size_t>> itemsOf(const std::vector<Bucket>& buckets) {
  std::vector<std::vector<size_t>> out;
  for (const auto& b : buckets) {
    out.push_back(b.items);
  }
  return out;
}

TEST(BucketPlan, PacksInOrderUpToTheCap) {
  const auto plan = planBuckets({{40, 0}, {40, 0}, {40, 0}, {10, 0}}, 100);
  EXPECT_EQ(itemsOf(plan), (std::vector<std::vector<size_t>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(plan[0].bytes, 80);
}

TEST(BucketPlan, OversizedItemsGetTheirOwnBucket) {
  const auto plan = planBuckets({{10, 0}, {500, 0}, {10, 0}}, 100);
  EXPECT_EQ(itemsOf(plan), (std::vector<std::vector<size_t>>{{0}, {1}, {2}}));
}

TEST(BucketPlan, GroupsNeverShareABucket) {
  const auto plan = planBuckets({{1, 0}, {1, 7}, {1, 0}, {1, 7}}, 100);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].items, (std::vector<size_t>{0, 2}));
  EXPECT_EQ(plan[1].items, (std::vector<size_t>{1, 3}));
  EXPECT_EQ(plan[1].group, 7);
}

TEST(BucketPlan, ThousandSmallTensorsFillFewBuckets) {
  std::vector<Item> items(1000, Item{4096, 0});
  const auto plan = planBuckets(items, 1 << 20);
  EXPECT_EQ(plan.size(), 4u);  // 256 tensors of 4 KiB per MiB
  EXPECT_EQ(plan.back().items.back(), 999u);
}

TEST(BucketPlan, EmptyListPlansNothing) {
  EXPECT_TRUE(planBuckets({}, 100).empty());
}

} // namespace
} // namespace qccl::bucket
