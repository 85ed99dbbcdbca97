// Gloo's chunking, as measured: the expected lengths come from a model of ProcessGroupGloo
// that reproduced real Gloo groups' results bit for bit (2 to 8 ranks, 4068 cases; see
// algo/gloo_ring_order.h), not from this code.

#include <gtest/gtest.h>

#include "qccl/algo/gloo_ring_order.h"

namespace {

struct Case {
  int64_t count, elementSize;
  int size;
  int64_t allreduceChunk, reduceChunk;
};

TEST(GlooRingOrder, ChunkLengthsMatchGloo) {
  const Case cases[] = {
      {1, 4, 3, 2, 2},
      {7, 4, 4, 2, 2},
      {1000, 4, 3, 334, 334},
      {4097, 2, 5, 820, 820},
      {65539, 8, 8, 8194, 8194},
      {1048581, 8, 3, 349527, 393216},  // past 2 * size MiB the two rings differ
      {5000000, 4, 4, 1250000, 1310720},
      {16777217, 4, 3, 5592422, 5767168},
      {33554433, 2, 3, 11184822, 11534336},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(qccl::algo::glooAllreduceChunkElements(c.count, c.elementSize, c.size), c.allreduceChunk)
        << c.count << " x " << c.elementSize << " bytes at " << c.size << " ranks";
    EXPECT_EQ(qccl::algo::glooReduceChunkElements(c.count, c.elementSize, c.size), c.reduceChunk)
        << c.count << " x " << c.elementSize << " bytes at " << c.size << " ranks";
  }
}

TEST(GlooRingOrder, EachChunkStartsAtTheRankBeforeItAndEndsAtItsOwn) {
  // Chunk 0 of 4 ranks: x[3] first, then x[2], x[1], and x[0] last.
  EXPECT_EQ(qccl::algo::glooRingRank(0, 0, 4), 3);
  EXPECT_EQ(qccl::algo::glooRingRank(0, 1, 4), 2);
  EXPECT_EQ(qccl::algo::glooRingRank(0, 3, 4), 0);
  EXPECT_EQ(qccl::algo::glooRingRank(2, 0, 3), 1);
  EXPECT_EQ(qccl::algo::glooRingRank(2, 2, 3), 2);
}

} // namespace
