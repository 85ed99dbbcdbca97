#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "qccl/common/tensor_bytes.h"

namespace {

TEST(TensorBytes, ConcatThenSplitRestoresEveryDtype) {
  std::vector<at::Tensor> originals = {
      at::randn({3, 2}),
      at::arange(5, at::TensorOptions().dtype(at::kShort)),
      at::randn({4}, at::TensorOptions().dtype(at::kComplexDouble)),
      at::ones({0}),
      at::arange(3).remainder(2).to(at::kBool),
      at::scalar_tensor(7, at::TensorOptions().dtype(at::kLong)),
  };
  auto flat = qccl::concatBytes(originals);
  int64_t total = 0;
  for (const auto& t : originals) {
    total += qccl::byteSize(t);
  }
  ASSERT_EQ(flat.numel(), total);
  ASSERT_EQ(flat.scalar_type(), at::kByte);

  std::vector<at::Tensor> restored;
  for (const auto& t : originals) {
    restored.push_back(at::empty_like(t));
  }
  EXPECT_EQ(qccl::splitBytesInto(flat, restored), total);
  for (size_t i = 0; i < originals.size(); ++i) {
    EXPECT_TRUE(at::equal(restored[i], originals[i])) << i;
  }
}

TEST(TensorBytes, AsBytesIsAViewOfTheSameMemory) {
  auto t = at::zeros({2, 2}, at::TensorOptions().dtype(at::kInt));
  auto bytes = qccl::asBytes(t);
  EXPECT_EQ(bytes.numel(), 16);
  bytes.fill_(1);
  EXPECT_EQ(t[0][0].item<int>(), 0x01010101);
}

} // namespace

namespace {

TEST(TensorBytes, SplitBytesCountsRowsOfDimZero) {
  auto t = at::zeros({6, 3}, at::TensorOptions().dtype(at::kShort));  // 6 bytes a row
  EXPECT_EQ(qccl::splitBytes(t, {}, 3), (std::vector<int64_t>{12, 12, 12}));
  EXPECT_EQ(qccl::splitBytes(t, {1, 0, 5}, 3), (std::vector<int64_t>{6, 0, 30}));
  auto empty = at::zeros({0, 3});
  EXPECT_EQ(qccl::splitBytes(empty, {}, 2), (std::vector<int64_t>{0, 0}));
}

} // namespace
