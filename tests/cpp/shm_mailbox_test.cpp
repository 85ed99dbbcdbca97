// The point-to-point mailbox (transport/shm/mailbox.h): two ranks in one process, each a
// thread, as its ring wraps, a peer goes away, and abort() cuts waits short.

#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "qccl/transport/shm/mailbox.h"

namespace {

using qccl::shm::Mailbox;
using namespace std::chrono_literals;

struct Pair {
  std::unique_ptr<Mailbox> rank0;
  std::unique_ptr<Mailbox> rank1;
};

Pair connected(uint64_t ringBytes) {
  Pair pair{std::make_unique<Mailbox>(0, 2, ringBytes), std::make_unique<Mailbox>(1, 2, ringBytes)};
  const std::vector<std::string> names{pair.rank0->myName(), pair.rank1->myName()};
  pair.rank0->attach(names);
  pair.rank1->attach(names);
  pair.rank0->unlinkOwn(5s);
  pair.rank1->unlinkOwn(5s);
  return pair;
}

uint8_t byteOf(uint64_t message, uint64_t i) {
  return static_cast<uint8_t>(message * 29 + i * 7);
}

uint64_t lengthOf(uint64_t message) {
  return 1 + (message * 7919) % 50000;  // up to 6x the ring: messages wrap and stream
}

TEST(ShmMailbox, MessagesAndStatusesArriveWholeAndInOrderThroughASmallRing) {
  auto pair = connected(8192);
  constexpr uint64_t kMessages = 300;
  std::thread writer([&] {
    for (uint64_t m = 0; m < kMessages; ++m) {
      std::vector<uint8_t> bytes(lengthOf(m));
      for (uint64_t i = 0; i < bytes.size(); ++i) {
        bytes[i] = byteOf(m, i);
      }
      pair.rank1->write(0, bytes.data(), bytes.size(), 10s);
      if (m % 10 == 0) {
        std::vector<uint8_t> status(Mailbox::kStatusBytes, static_cast<uint8_t>(m / 10));
        pair.rank1->postStatus(0, status.data());
      }
    }
  });
  uint64_t message = 0;
  uint64_t statuses = 0;
  std::vector<uint8_t> status(Mailbox::kStatusBytes);
  while (message < kMessages || statuses < kMessages / 10) {
    ASSERT_TRUE(pair.rank0->awaitFrom(1));
    if (pair.rank0->takeStatus(1, status.data())) {
      EXPECT_EQ(status[0], static_cast<uint8_t>(statuses)) << "statuses in order";
      EXPECT_EQ(status[Mailbox::kStatusBytes - 1], static_cast<uint8_t>(statuses));
      ++statuses;
      continue;
    }
    std::vector<uint8_t> bytes(lengthOf(message));
    pair.rank0->read(1, bytes.data(), bytes.size());
    for (uint64_t i = 0; i < bytes.size(); ++i) {
      ASSERT_EQ(bytes[i], byteOf(message, i)) << "message " << message << " byte " << i;
    }
    ++message;
  }
  writer.join();
  EXPECT_EQ(pair.rank1->bytesWritten(), [] {
    uint64_t total = 0;
    for (uint64_t m = 0; m < kMessages; ++m) {
      total += lengthOf(m);
    }
    return total;
  }());
}

TEST(ShmMailbox, AReaderGetsWhatAPeerWroteBeforeItWentAwayThenLearnsItIsGone) {
  auto pair = connected(4096);
  const std::vector<uint8_t> last(100, 42);
  pair.rank1->write(0, last.data(), last.size(), 1s);
  pair.rank1.reset();  // gone
  ASSERT_TRUE(pair.rank0->awaitFrom(1));
  std::vector<uint8_t> bytes(100);
  pair.rank0->read(1, bytes.data(), bytes.size());
  EXPECT_EQ(bytes, last);
  EXPECT_FALSE(pair.rank0->awaitFrom(1));
  EXPECT_THROW(pair.rank0->read(1, bytes.data(), 1), c10::DistBackendError);
  EXPECT_THROW(pair.rank0->write(1, bytes.data(), 1, 1s), c10::DistBackendError);
}

TEST(ShmMailbox, AbortEndsAWaitingReaderAndAWriterWaitingForRoom) {
  auto pair = connected(4096);
  auto reader = std::async(std::launch::async, [&] { return pair.rank0->awaitFrom(1); });
  std::vector<uint8_t> big(3 * 4096);
  auto writer = std::async(std::launch::async, [&] { pair.rank0->write(1, big.data(), big.size(), 60s); });
  EXPECT_EQ(reader.wait_for(50ms), std::future_status::timeout);
  EXPECT_EQ(writer.wait_for(50ms), std::future_status::timeout);  // rank 1 reads nothing
  const auto start = std::chrono::steady_clock::now();
  pair.rank0->abort();
  EXPECT_THROW(reader.get(), c10::DistBackendError);
  EXPECT_THROW(writer.get(), c10::DistBackendError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

TEST(ShmMailbox, AStatusRingThatIsFullRaisesInsteadOfWaiting) {
  auto pair = connected(4096);
  std::vector<uint8_t> status(Mailbox::kStatusBytes);
  int posted = 0;
  try {
    for (; posted < 100; ++posted) {
      pair.rank1->postStatus(0, status.data());
    }
  } catch (const c10::DistBackendError&) {
  }
  EXPECT_EQ(posted, 16);
  EXPECT_TRUE(pair.rank0->takeStatus(1, status.data()));
  pair.rank1->postStatus(0, status.data());  // room for one more
}

} // namespace
