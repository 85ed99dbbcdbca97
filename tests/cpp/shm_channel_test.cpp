// The shared-memory channel (transport/shm/channel.h) between real processes: one
// forked child per rank (tests/cpp/forked_ranks.h), segment names relayed through pipes
// as the group's store relays them. Children report one line; the parent asserts.

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <memory>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "forked_ranks.h"
#include "qccl/transport/shm/channel.h"

namespace {

using qccl::shm::Channel;
using qccl::testing::ForkedRanks;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string word; in >> word;) {
    out.push_back(word);
  }
  return out;
}

// In a child: the integrator's setup (create, names through the "store", attach, unlink).
std::unique_ptr<Channel> connect(const ForkedRanks& ranks, int rank, uint64_t slotBytes, std::chrono::milliseconds timeout) {
  auto channel = std::make_unique<Channel>(rank, ranks.size(), slotBytes, timeout);
  ranks.send(channel->myName());
  channel->attach(words(ranks.receive()));
  channel->unlinkOwn();
  return channel;
}

int64_t millisecondsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// What rank `rank` writes in `round`: a length and bytes no other (rank, round) shares.
uint64_t roundBytes(uint64_t slotBytes, int rank, uint64_t round) {
  return 1 + (round * 131 + rank * 17) % slotBytes;
}
uint8_t roundByte(int rank, uint64_t round, uint64_t i) {
  return static_cast<uint8_t>(rank * 31 + round * 7 + i * 13);
}

// "" if `data` holds what `rank` wrote in `round`, else where it differs.
std::string mismatch(const uint8_t* data, uint64_t slotBytes, int rank, uint64_t round) {
  for (uint64_t i = 0; i < roundBytes(slotBytes, rank, round); ++i) {
    if (data[i] != roundByte(rank, round, i)) {
      return "round " + std::to_string(round) + ": byte " + std::to_string(i) + " of rank " + std::to_string(rank) +
          " is " + std::to_string(data[i]) + ", expected " + std::to_string(roundByte(rank, round, i));
    }
  }
  return "";
}

// Busy for a while without giving up the core: a slow reader.
void dawdle(std::chrono::microseconds time) {
  for (const auto start = Clock::now(); Clock::now() - start < time;) {
  }
}

// Every rank writes round-specific bytes every round and reads every rank's (its own
// included) twice; in turn, one rank a round dawdles between the reads: its peers go a
// round ahead and write meanwhile, into the other slot; were both rounds in one slot,
// the second read would see their bytes.
std::string everyRankReadsEveryRank(Channel& channel, uint64_t rounds, std::chrono::microseconds dawdling = std::chrono::microseconds(20)) {
  const uint64_t slotBytes = channel.slotBytes();
  for (uint64_t round = 1; round <= rounds; ++round) {
    uint8_t* out = channel.beginWrite(round);
    const uint64_t bytes = roundBytes(slotBytes, channel.rank(), round);
    for (uint64_t i = 0; i < bytes; ++i) {
      out[i] = roundByte(channel.rank(), round, i);
    }
    channel.publish(round, bytes);
    for (int peer = 0; peer < channel.size(); ++peer) {
      const uint8_t* in = channel.awaitPeer(peer, round);
      for (int pass = 0; pass < 2; ++pass) {
        if (auto wrong = mismatch(in, slotBytes, peer, round); !wrong.empty()) {
          return wrong + (pass ? " on a second read" : "");
        }
        if (round % channel.size() == static_cast<uint64_t>(channel.rank())) {
          dawdle(dawdling);
        }
      }
    }
    channel.finish(round);
  }
  return "ok " + std::to_string(channel.bytesPublished());
}

std::string expectedSweepResult(uint64_t slotBytes, int rank, uint64_t rounds) {
  uint64_t bytes = 0;
  for (uint64_t round = 1; round <= rounds; ++round) {
    bytes += roundBytes(slotBytes, rank, round);
  }
  return "ok " + std::to_string(bytes);
}

class ShmChannelRanks : public ::testing::TestWithParam<int> {};

TEST_P(ShmChannelRanks, EveryRankReadsEveryRanksBytesInEveryRound) {
  const int size = GetParam();
  const uint64_t slotBytes = 4096 + 100; // not a page multiple: slots are padded apart
  const uint64_t rounds = 300;
  ForkedRanks ranks(size, [&](int rank) {
    auto channel = connect(ranks, rank, slotBytes, 30s);
    return everyRankReadsEveryRank(*channel, rounds);
  });
  ranks.exchangeLines();
  const auto results = ranks.results();
  for (int rank = 0; rank < size; ++rank) {
    EXPECT_EQ(results[rank], expectedSweepResult(slotBytes, rank, rounds)) << "rank " << rank;
  }
}

// A rank SIGKILLed while the others sleep waiting for it: they raise within a slice or
// so, naming it, long before the timeout.
TEST_P(ShmChannelRanks, ARankKilledWhileOthersWaitIsNamedLongBeforeTheTimeout) {
  const int size = GetParam();
  const int victim = size - 1;
  ForkedRanks ranks(size, [&](int rank) -> std::string {
    auto channel = connect(ranks, rank, 64, 60s);
    channel->publish(1, 0); // a first round: everyone is in
    for (int peer = 0; peer < size; ++peer) {
      channel->awaitPeer(peer, 1);
    }
    channel->finish(1);
    if (rank == victim) {
      ranks.send("ready");
      ranks.receive(); // never answered: the parent kills this rank
      return "not killed";
    }
    channel->publish(2, 0);
    ranks.send("waiting");
    const auto start = Clock::now();
    try {
      channel->awaitPeer(victim, 2);
      return "returned";
    } catch (const c10::DistBackendError& e) {
      return "threw after " + std::to_string(millisecondsSince(start)) + " ms: " + e.what_without_backtrace();
    }
  });
  ranks.exchangeLines();
  ASSERT_EQ(ranks.receiveFrom(victim), "ready");
  for (int rank = 0; rank < victim; ++rank) {
    ASSERT_EQ(ranks.receiveFrom(rank), "waiting");
  }
  std::this_thread::sleep_for(100ms); // let them fall asleep (they would raise awake too)
  ranks.kill(victim);
  const auto results = ranks.results();
  for (int rank = 0; rank < victim; ++rank) {
    const auto& result = results[rank];
    ASSERT_EQ(result.rfind("threw after ", 0), 0u) << result;
    EXPECT_LT(std::stoll(result.substr(12)), 5000) << result;
    EXPECT_NE(result.find("qccl: shared-memory round 2 on rank " + std::to_string(rank)), std::string::npos) << result;
    EXPECT_NE(result.find("rank " + std::to_string(victim) + " died"), std::string::npos) << result;
  }
}

INSTANTIATE_TEST_SUITE_P(Shm, ShmChannelRanks, ::testing::Values(2, 3, 4));

// Rank 0 writes every round and never reads, so only beginWrite's wait for round r - 2's
// readers keeps it from overwriting a slot that slow readers still read.
TEST(ShmChannel, AWriterThatNeverReadsWaitsForItsSlowestReader) {
  const uint64_t slotBytes = 1000;
  const uint64_t rounds = 200;
  ForkedRanks ranks(3, [&](int rank) -> std::string {
    auto channel = connect(ranks, rank, slotBytes, 30s);
    for (uint64_t round = 1; round <= rounds; ++round) {
      if (rank == 0) {
        uint8_t* out = channel->beginWrite(round);
        for (uint64_t i = 0; i < roundBytes(slotBytes, 0, round); ++i) {
          out[i] = roundByte(0, round, i);
        }
        channel->publish(round, roundBytes(slotBytes, 0, round));
      } else {
        channel->publish(round, 0);
        const uint8_t* in = channel->awaitPeer(0, round);
        for (int pass = 0; pass < 2; ++pass) { // a slow reader
          if (auto wrong = mismatch(in, slotBytes, 0, round); !wrong.empty()) {
            return wrong;
          }
          dawdle(std::chrono::microseconds(50));
        }
      }
      channel->finish(round);
    }
    return "ok";
  });
  ranks.exchangeLines();
  EXPECT_EQ(ranks.results(), std::vector<std::string>(3, "ok"));
}

void pinToOneCore(int core) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(core, &one);
  if (sched_setaffinity(0, sizeof(one), &one) != 0) {
    throw std::runtime_error("sched_setaffinity failed");
  }
}

// The pace of context switches on one core, as the machine's load allows now:
// milliseconds for `laps` of a token passed around four processes through pipes.
int64_t pipeRingMilliseconds(int core, int laps) {
  int pipes[4][2];
  for (auto& end : pipes) {
    if (pipe(end) != 0) {
      throw std::runtime_error("pipe failed");
    }
  }
  ForkedRanks ring(4, [&](int rank) -> std::string {
    pinToOneCore(core);
    char token = 0;
    if (rank == 0 && write(pipes[1][1], &token, 1) != 1) {
      return "write failed";
    }
    for (int lap = 0; lap < laps; ++lap) {
      const bool last = rank == 0 && lap == laps - 1;
      if (read(pipes[rank][0], &token, 1) != 1 || (!last && write(pipes[(rank + 1) % 4][1], &token, 1) != 1)) {
        return "pipe failed";
      }
    }
    return "ok";
  });
  const auto start = Clock::now();
  const auto results = ring.results();
  const int64_t milliseconds = millisecondsSince(start);
  for (auto& end : pipes) {
    close(end[0]);
    close(end[1]);
  }
  EXPECT_EQ(results, std::vector<std::string>(4, "ok"));
  return milliseconds;
}

// Milliseconds four ranks pinned to `core` take for `rounds` rounds (the slowest rank's).
int64_t fourRanksOnOneCoreMilliseconds(int core, int rounds) {
  ForkedRanks ranks(4, [&](int rank) -> std::string {
    pinToOneCore(core);
    auto channel = connect(ranks, rank, 64, 30s);
    const auto start = Clock::now();
    auto result = everyRankReadsEveryRank(*channel, rounds, std::chrono::microseconds(0));
    return result.rfind("ok", 0) == 0 ? std::to_string(millisecondsSince(start)) : result;
  });
  ranks.exchangeLines();
  int64_t slowest = 0;
  for (const auto& result : ranks.results()) {
    EXPECT_TRUE(!result.empty() && std::isdigit(result[0])) << result;
    slowest = std::max<int64_t>(slowest, std::isdigit(result[0]) ? std::stoll(result) : 1000000);
  }
  return slowest;
}

// More ranks than cores: four ranks pinned to one core must still run rounds at the
// pace of context switches, not of time slices (a waiter that spins until preempted
// costs its peers a slice, milliseconds, per round). The pace is measured beside, and
// the best of three tries counts, so that a loaded machine slows both alike.
TEST(ShmChannel, FourRanksOnOneCoreKeepUp) {
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  int core = 0;
  while (!CPU_ISSET(core, &allowed)) {
    ++core;
  }
  const int rounds = 700;
  double best = 1e9;
  std::string tries;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int64_t ring = pipeRingMilliseconds(core, rounds);
    const int64_t channel = fourRanksOnOneCoreMilliseconds(core, rounds);
    best = std::min(best, static_cast<double>(channel) / std::max<int64_t>(ring, 1));
    tries += " " + std::to_string(channel) + " ms vs " + std::to_string(ring) + " ms;";
  }
  // Measured 1.6-2.1x the ring on an idle 2-core VM, 0.9-3.2x beside six busy loops;
  // waits that spin for 1 ms took 100x and more.
  EXPECT_LT(best, 10) << rounds << " rounds against a ring of as many laps:" << tries;
}

// After unlinkOwn nothing names the segments: SIGKILL every rank and /dev/shm is clean.
TEST(ShmChannel, NoSegmentIsLeftOnceEveryRankIsKilled) {
  const int size = 3;
  ForkedRanks ranks(size, [&](int rank) -> std::string {
    auto channel = connect(ranks, rank, 1 << 16, 30s);
    ranks.send("ready");
    ranks.receive(); // killed here
    return "not killed";
  });
  std::vector<std::string> names;
  std::string all;
  for (int rank = 0; rank < size; ++rank) {
    names.push_back(ranks.receiveFrom(rank));
    all += names.back() + " ";
  }
  for (const auto& name : names) { // before attach, so not unlinked yet: the check can see them
    EXPECT_TRUE(std::filesystem::exists("/dev/shm" + name)) << name;
  }
  for (int rank = 0; rank < size; ++rank) {
    ranks.sendTo(rank, all);
  }
  for (int rank = 0; rank < size; ++rank) {
    ASSERT_EQ(ranks.receiveFrom(rank), "ready");
  }
  std::vector<std::string> prefixes;
  for (int rank = 0; rank < size; ++rank) {
    prefixes.push_back("qccl-" + std::to_string(ranks.pid(rank)) + "-");
    ranks.kill(rank);
  }
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const auto file = entry.path().filename().string();
    for (const auto& prefix : prefixes) {
      EXPECT_NE(file.rfind(prefix, 0), 0u) << "left behind: /dev/shm/" << file;
    }
  }
}

// Two ranks as threads of this process (the channel allows it): a waiter, and the peer
// it waits for, which never publishes.
struct TwoChannels {
  explicit TwoChannels(std::chrono::milliseconds timeout) : a(0, 2, 64, timeout), b(1, 2, 64, timeout) {
    a.attach({a.myName(), b.myName()});
    b.attach({a.myName(), b.myName()});
    a.unlinkOwn();
    b.unlinkOwn();
  }
  Channel a;
  Channel b;
};

// The same sweep with ranks as threads of one process, which the channel allows (it then
// has no process to watch). Each channel maps each segment at an address of its own, so
// ThreadSanitizer cannot see these threads' sharing: ordering is argued in the code.
TEST(ShmChannel, RanksAsThreadsOfOneProcess) {
  const int size = 3;
  const uint64_t rounds = 100;
  std::vector<std::unique_ptr<Channel>> channels;
  std::vector<std::string> names;
  for (int rank = 0; rank < size; ++rank) {
    channels.push_back(std::make_unique<Channel>(rank, size, 512, 30s));
    names.push_back(channels.back()->myName());
  }
  std::vector<std::string> results(size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        channels[rank]->attach(names);
        channels[rank]->unlinkOwn();
        results[rank] = everyRankReadsEveryRank(*channels[rank], rounds);
      } catch (...) {
        results[rank] = "threw: " + qccl::describeException(std::current_exception());
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  for (int rank = 0; rank < size; ++rank) {
    EXPECT_EQ(results[rank], expectedSweepResult(512, rank, rounds)) << "rank " << rank;
  }
}

double threadCpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return now.tv_sec + now.tv_nsec * 1e-9;
}

TEST(ShmChannel, AWaitPastTheTimeoutSaysTimedOutAndSleptMeanwhile) {
  TwoChannels ranks(300ms);
  ranks.a.publish(1, 0);
  const auto start = Clock::now();
  const double cpuStart = threadCpuSeconds();
  try {
    ranks.a.awaitPeer(1, 1);
    FAIL() << "no timeout";
  } catch (const c10::DistBackendError& e) {
    EXPECT_EQ(
        std::string(e.what_without_backtrace()),
        "qccl: shared-memory round 1 on rank 0: Timed out after 300 ms (waiting for rank 1 to publish round 1)");
  }
  const double wall = millisecondsSince(start) / 1e3;
  EXPECT_GE(wall, 0.3);
  EXPECT_LT(wall, 5.0);
  EXPECT_LT(threadCpuSeconds() - cpuStart, 0.3 * wall) << "the wait spun instead of sleeping";
  // Sticky: the channel refuses later calls, and its peer's waits on it fail at once.
  EXPECT_THROW(ranks.a.finish(1), c10::DistBackendError);
  ranks.b.publish(1, 0);
  ranks.b.awaitPeer(0, 1); // published before the failure: still readable
  ranks.b.finish(1);
  ranks.b.publish(2, 0);
  const auto peerStart = Clock::now();
  try {
    ranks.b.awaitPeer(0, 2);
    FAIL() << "rank 1 waited on a failed rank 0 without raising";
  } catch (const c10::DistBackendError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 closed its shared-memory channel"), std::string::npos) << e.what();
  }
  EXPECT_LT(millisecondsSince(peerStart), 1000);
}

TEST(ShmChannel, AbortFromAnotherThreadWakesASleepingWaiter) {
  TwoChannels ranks(60s);
  ranks.a.publish(1, 0);
  std::string message;
  Clock::time_point thrown;
  std::thread waiter([&] {
    try {
      ranks.a.awaitPeer(1, 1);
      message = "returned";
    } catch (const c10::DistBackendError& e) {
      message = e.what_without_backtrace();
    }
    thrown = Clock::now();
  });
  std::this_thread::sleep_for(100ms); // let it fall asleep (it would raise awake too)
  const auto aborted = Clock::now();
  ranks.a.abort("rank 2 reported that the group failed there");
  waiter.join();
  EXPECT_EQ(message,
            "qccl: shared-memory round 1 on rank 0: aborted (rank 2 reported that the group failed there) while "
            "waiting for rank 1 to publish round 1");
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(thrown - aborted).count(), 1000);
  EXPECT_THROW(ranks.a.awaitPeer(1, 1), c10::DistBackendError); // and every later wait
}

TEST(ShmChannel, CallsOutOfOrderAreRefused) {
  Channel lone(0, 2, 64, 1s);
  EXPECT_THROW(lone.publish(1, 0), c10::ValueError); // before attach
  TwoChannels ranks(1s);
  EXPECT_THROW(ranks.a.publish(2, 0), c10::ValueError); // round 1 comes first
  EXPECT_THROW(ranks.a.finish(1), c10::ValueError); // not published
  EXPECT_THROW(ranks.a.awaitPeer(0, 1), c10::ValueError); // its own slot, not published
  EXPECT_THROW(ranks.a.publish(1, 65), c10::ValueError); // more than a slot
  ranks.a.publish(1, 64);
  EXPECT_THROW(ranks.a.awaitPeer(2, 1), c10::ValueError); // no rank 2
  EXPECT_THROW(ranks.a.beginWrite(2), c10::ValueError); // round 1 not finished
  EXPECT_EQ(ranks.a.bytesPublished(), 64u);
}

TEST(ShmChannel, AttachChecksThePeersSegment) {
  Channel a(0, 2, 64, 1s);
  Channel b(1, 2, 128, 1s); // another slot size: another segment size
  EXPECT_THROW(a.attach({a.myName(), b.myName()}), c10::DistBackendError);
  EXPECT_THROW(a.attach({b.myName(), a.myName()}), c10::ValueError); // not in rank order
  Channel c(0, 2, 64, 1s); // rank 0 as well
  EXPECT_THROW(a.attach({a.myName(), c.myName()}), c10::DistBackendError);
}

} // namespace
