// PeerWaits: the per-peer waits of the cross-rank check, against hand-computed buckets.

#include <gtest/gtest.h>

#include <cmath>

#include "qccl/backend/peer_waits.h"

using qccl::PeerWaits;

TEST(PeerWaits, BucketsDoubleEveryFour) {
  EXPECT_EQ(PeerWaits::bucketOf(0), 0);
  EXPECT_EQ(PeerWaits::bucketOf(999), 0);      // under 1 us
  EXPECT_EQ(PeerWaits::bucketOf(1000), 1);     // [1, 2^0.25) us
  EXPECT_EQ(PeerWaits::bucketOf(1189), 1);     // just under 2^0.25 us = 1189.2 ns
  EXPECT_EQ(PeerWaits::bucketOf(1190), 2);
  EXPECT_EQ(PeerWaits::bucketOf(2000), 5);     // 2 us: one doubling, four buckets on
  EXPECT_EQ(PeerWaits::bucketOf(1000000), 1 + static_cast<int>(4 * std::log2(1000.0)));  // 1 ms
  EXPECT_EQ(PeerWaits::bucketOf(int64_t{1} << 62), PeerWaits::kBuckets - 1);  // beyond the last
}

TEST(PeerWaits, CountsEachPeerButSelf) {
  PeerWaits waits(3);
  waits.add(1, {2000, 5, 3000000});
  waits.add(1, {4000, 7, 1000});
  const auto peers = waits.snapshot();
  EXPECT_EQ(peers[0].checks, 2);
  EXPECT_EQ(peers[0].totalNs, 6000);
  EXPECT_EQ(peers[0].longestNs, 4000);
  EXPECT_EQ(peers[0].histogram[5], 1);  // 2 us
  EXPECT_EQ(peers[0].histogram[9], 1);  // 4 us
  EXPECT_EQ(peers[1].checks, 0);        // this rank
  EXPECT_EQ(peers[2].totalNs, 3001000);
  waits.reset();
  EXPECT_EQ(waits.snapshot()[2].checks, 0);
}
