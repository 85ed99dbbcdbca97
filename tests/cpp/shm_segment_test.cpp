// Shared-memory segments (transport/shm/segment.h) and same-host identity
// (transport/shm/host_identity.h). Tests that need another mount or network namespace
// run in a forked child and skip, saying why, where the system refuses one.

#include <sched.h>
#include <sys/mount.h>

#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "forked_ranks.h"
#include "qccl/transport/shm/channel.h"
#include "qccl/transport/shm/host_identity.h"
#include "qccl/transport/shm/segment.h"

namespace {

using qccl::shm::Segment;
using qccl::shm::SegmentTooLarge;
using qccl::testing::ForkedRanks;

// Enters new namespaces of `kinds`, as root or else through a user namespace; returns
// "" or why not.
std::string enterNamespaces(int kinds) {
  if (unshare(kinds) == 0 || unshare(CLONE_NEWUSER | kinds) == 0) {
    return "";
  }
  return std::string("unshare: ") + std::strerror(errno);
}

TEST(ShmSegment, FitsComparesNeededAndFreeBytes) {
  EXPECT_NO_THROW(qccl::shm::checkSegmentFits(10, 10));
  EXPECT_NO_THROW(qccl::shm::checkSegmentFits(uint64_t{1} << 40, std::nullopt)); // no limit
  try {
    qccl::shm::checkSegmentFits(uint64_t{5} << 32, uint64_t{3} << 32);
    FAIL() << "fits";
  } catch (const SegmentTooLarge& e) {
    EXPECT_EQ(e.neededBytes(), uint64_t{5} << 32); // 64-bit sizes
    EXPECT_EQ(e.freeBytes(), uint64_t{3} << 32);
    EXPECT_NE(std::string(e.what()).find("has 12884901888 bytes free"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("needs 21474836480 bytes"), std::string::npos) << e.what();
  }
}

TEST(ShmSegment, ASegmentLargerThanDevShmIsRefusedBeforeAnyAllocation) {
  const auto free = qccl::shm::shmFreeBytes();
  if (!free) {
    GTEST_SKIP() << "/dev/shm sets no size limit here";
  }
  EXPECT_THROW(Segment::create(*free + (uint64_t{1} << 30)), SegmentTooLarge);
}

TEST(ShmSegment, CreatedPrivateAndUnlinkedOnce) {
  Segment segment = Segment::create(10000);
  const std::string path = "/dev/shm" + segment.name();
  EXPECT_EQ(segment.name().rfind("/qccl-" + std::to_string(getpid()) + "-", 0), 0u) << segment.name();
  EXPECT_EQ(segment.name().size(), std::string("/qccl-" + std::to_string(getpid()) + "-").size() + 16);
  EXPECT_EQ(std::filesystem::status(path).permissions(), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(segment.data()[9999], 0);
  {
    Segment peer = Segment::open(segment.name(), 10000);
    peer.data()[42] = 7;
    EXPECT_THROW(Segment::open(segment.name(), 4096), c10::DistBackendError); // wrong size
  }
  EXPECT_EQ(segment.data()[42], 7); // one memory
  segment.unlink();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(segment.data()[42], 7); // still mapped
  EXPECT_THROW(Segment::open(segment.name(), 10000), c10::DistBackendError);
  EXPECT_THROW(Segment::open("/etc-passwd", 10000), c10::ValueError); // not a qccl name
}

TEST(ShmSegment, TheDestructorRemovesAStillLinkedName) {
  std::string path;
  {
    Segment segment = Segment::create(4096);
    path = "/dev/shm" + segment.name();
    EXPECT_TRUE(std::filesystem::exists(path));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

// A private 1 MiB tmpfs on /dev/shm: reservation fails up front with SegmentTooLarge,
// both when statvfs sees it and when only posix_fallocate does, and nothing is left.
// With ftruncate instead, the writes below would raise SIGBUS.
TEST(ShmSegment, AFullDevShmGivesSegmentTooLargeNeverSigbus) {
  ForkedRanks child(1, [](int) -> std::string {
    if (auto why = enterNamespaces(CLONE_NEWNS); !why.empty()) {
      return "skip: " + why;
    }
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") != 0) {
      return std::string("skip: mount: ") + std::strerror(errno);
    }
    const uint64_t bytes = 8 << 20;
    std::string result;
    for (auto assumeFree : {std::optional<uint64_t>(), std::optional<uint64_t>(uint64_t{1} << 40)}) {
      try {
        Segment segment = Segment::create(bytes, assumeFree);
        std::memset(segment.data(), 1, bytes);
        result += "created ";
      } catch (const SegmentTooLarge& e) {
        result += "too large (" + std::to_string(e.neededBytes()) + " needed) ";
      }
    }
    try {
      qccl::shm::Channel channel(0, 2, 4 << 20, std::chrono::seconds(1));
      result += "channel ";
    } catch (const SegmentTooLarge&) {
      result += "channel too large ";
    }
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
      result += "left " + entry.path().string() + " ";
    }
    return result;
  });
  const auto result = child.results()[0];
  if (result.rfind("skip: ", 0) == 0) {
    GTEST_SKIP() << result;
  }
  EXPECT_EQ(result, "too large (8388608 needed) too large (8388608 needed) channel too large ");
}

TEST(ShmHostIdentity, StableInAProcessTheSameInAChildAndDifferentInAnotherNetworkNamespace) {
  const std::string mine = qccl::shm::hostIdentity();
  EXPECT_EQ(mine, qccl::shm::hostIdentity());
  for (const char* part : {"boot=", ";host=", ";netns=", ";ipcns=", ";pidns=", ";shm="}) {
    EXPECT_NE(mine.find(part), std::string::npos) << mine;
  }
  EXPECT_EQ(mine.find('?'), std::string::npos) << "a fact could not be read: " << mine;
  ForkedRanks child(1, [](int) -> std::string {
    const std::string before = qccl::shm::hostIdentity();
    if (auto why = enterNamespaces(CLONE_NEWNET); !why.empty()) {
      return before + " skip: " + why;
    }
    return before + " " + qccl::shm::hostIdentity();
  });
  const auto result = child.results()[0];
  const auto space = result.find(' ');
  ASSERT_NE(space, std::string::npos) << result;
  EXPECT_EQ(result.substr(0, space), mine);
  const std::string inNetns = result.substr(space + 1);
  if (inNetns.rfind("skip: ", 0) == 0) {
    GTEST_SKIP() << inNetns;
  }
  EXPECT_NE(inNetns, mine);
  auto withoutNetns = [](std::string identity) {
    const auto start = identity.find(";netns=");
    return identity.erase(start, identity.find(';', start + 1) - start);
  };
  EXPECT_EQ(withoutNetns(inNetns), withoutNetns(mine)); // only the network namespace differs
}

} // namespace
