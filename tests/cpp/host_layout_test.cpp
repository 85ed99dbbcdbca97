#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "qccl/transport/host_layout.h"

namespace {

// One letter per rank: the rank's host.
qccl::HostLayout layout(const std::string& hosts) {
  std::vector<std::string> byRank;
  for (char host : hosts) {
    byRank.emplace_back(1, host);
  }
  return qccl::HostLayout(byRank);
}

TEST(HostLayout, RunsOfEqualLengthOnDistinctHostsAreNodes) {
  EXPECT_EQ(layout("aabb").ranksPerNode(), 2);
  EXPECT_EQ(layout("aaabbbccc").ranksPerNode(), 3);
  EXPECT_FALSE(layout("aabb").oneHost());
  EXPECT_TRUE(layout("aabb").shareAHost(2, 2));
  EXPECT_FALSE(layout("aabb").shareAHost(1, 2));
}

TEST(HostLayout, AnythingElseIsNoHierarchy) {
  EXPECT_EQ(layout("aaaa").ranksPerNode(), 1);  // one host: shared memory, not nodes
  EXPECT_TRUE(layout("aaaa").oneHost());
  EXPECT_EQ(layout("abcd").ranksPerNode(), 1);  // one rank per host
  EXPECT_EQ(layout("aabbb").ranksPerNode(), 1);  // runs that differ
  EXPECT_EQ(layout("aaab").ranksPerNode(), 1);
  EXPECT_EQ(layout("abab").ranksPerNode(), 1);  // interleaved
  EXPECT_EQ(layout("aabbaa").ranksPerNode(), 1);  // a host seen again
  EXPECT_EQ(layout("a").ranksPerNode(), 1);
}

} // namespace
