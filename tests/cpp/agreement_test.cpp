// The all-to-all sketch of the cross-rank argument check (algo/agreement.h): summed over
// the ranks, the sent and received halves agree exactly when every pair of ranks agrees
// on what goes between them. Each case builds the byte counts from one matrix of what
// rank s sends rank d, so which pairs agree is known independently of the sketch.

#include <gtest/gtest.h>

#include <vector>

#include "qccl/algo/agreement.h"

namespace {

using Matrix = std::vector<std::vector<int64_t>>;  // [from][to] bytes

// Sums every rank's sketch; rank r sends sends[r][d] and expects expects[s][r] from s.
bool sketchesAgree(const Matrix& sends, const Matrix& expects) {
  const int n = static_cast<int>(sends.size());
  uint64_t sent = 0;
  uint64_t received = 0;
  for (int r = 0; r < n; ++r) {
    std::vector<int64_t> recvBytes;
    for (int s = 0; s < n; ++s) {
      recvBytes.push_back(expects[s][r]);
    }
    const auto sketch = qccl::sketchByteCounts(r, sends[r], recvBytes);
    sent += sketch.sent;
    received += sketch.received;
  }
  return sent == received;
}

Matrix uneven(int n) {
  Matrix m(n, std::vector<int64_t>(n));
  for (int s = 0; s < n; ++s) {
    for (int d = 0; d < n; ++d) {
      m[s][d] = 4 * (s + 2 * d + 1);
    }
  }
  return m;
}

TEST(ByteCountSketch, AgreesWhenEveryPairAgrees) {
  for (int n : {2, 3, 4, 8}) {
    EXPECT_TRUE(sketchesAgree(uneven(n), uneven(n))) << n << " ranks";
  }
}

TEST(ByteCountSketch, SeesAPairThatDisagreesThoughEveryRanksTotalsBalance) {
  const auto sends = uneven(4);
  auto expects = sends;
  // Rank 0 sends rank 2 four bytes more and rank 3 four bytes less than they expect:
  // every rank's totals are unchanged.
  expects[0][2] -= 4;
  expects[0][3] += 4;
  EXPECT_FALSE(sketchesAgree(sends, expects));
}

TEST(ByteCountSketch, SeesCountsSwappedBetweenPeers) {
  const auto sends = uneven(4);
  auto expects = sends;
  std::swap(expects[1][0], expects[1][3]);  // the same counts, paired with the wrong peers
  EXPECT_FALSE(sketchesAgree(sends, expects));
}

TEST(ByteCountSketch, SeesEverySingleChangedCount) {
  const int n = 4;
  const auto sends = uneven(n);
  for (int s = 0; s < n; ++s) {
    for (int d = 0; d < n; ++d) {
      auto expects = sends;
      expects[s][d] += 1;
      EXPECT_FALSE(sketchesAgree(sends, expects)) << s << " -> " << d;
    }
  }
}

TEST(ByteCountSketch, IsZeroForCallsWithoutByteCounts) {
  const auto sketch = qccl::sketchByteCounts(1, {}, {});
  EXPECT_EQ(sketch.sent, 0u);
  EXPECT_EQ(sketch.received, 0u);
}

} // namespace
