// The point-to-point matching rules (p2p/matching.h), driven directly: no threads, no
// transport. Expected pairings follow MPI's: by source (or any) and tag, in posting and
// arrival order.

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "qccl/p2p/matching.h"

namespace {

using qccl::p2p::Header;
using qccl::p2p::Matching;
using qccl::p2p::P2PWork;
using Work = c10::intrusive_ptr<P2PWork>;

Work receiveWork(const std::string& name) {
  return c10::make_intrusive<P2PWork>(0, c10d::OpType::RECV, name, at::zeros({1}), std::chrono::seconds(60), -1);
}

Header headerWithTag(int64_t tag) {
  Header header;
  header.tag = tag;
  return header;
}

// A receive whose message is already in.
TEST(Matching, AReceiveTakesAMessageThatArrivedBeforeIt) {
  Matching matching;
  auto message = matching.messageArriving(1, headerWithTag(5));
  EXPECT_FALSE(message->receiver);
  EXPECT_FALSE(matching.messageArrived(message));  // no receive yet: it waits
  auto work = receiveWork("r");
  EXPECT_EQ(matching.postReceive({work, at::zeros({1}), 1, 5}), message);
  EXPECT_EQ(matching.postReceive({receiveWork("again"), at::zeros({1}), 1, 5}), nullptr);  // it was taken
}

TEST(Matching, AMessageGoesToTheReceivePostedForIt) {
  Matching matching;
  auto work = receiveWork("r");
  auto tensor = at::zeros({3});
  EXPECT_EQ(matching.postReceive({work, tensor, 2, 7}), nullptr);
  auto message = matching.messageArriving(2, headerWithTag(7));
  EXPECT_EQ(message->receiver, work);
  EXPECT_TRUE(message->receiveTensor.is_same(tensor));
  EXPECT_TRUE(matching.messageArrived(message));
}

TEST(Matching, AReceivePostedWhileItsMessageArrivesWaitsForThePayload) {
  Matching matching;
  auto message = matching.messageArriving(1, headerWithTag(0));
  auto work = receiveWork("r");
  EXPECT_EQ(matching.postReceive({work, at::zeros({1}), 1, 0}), nullptr);  // not arrived yet
  EXPECT_EQ(message->receiver, work);
  EXPECT_TRUE(matching.messageArrived(message));  // now the listener delivers it
}

TEST(Matching, TagsAndSourcesMustMatch) {
  Matching matching;
  auto fromOneTagTwo = matching.messageArriving(1, headerWithTag(2));
  matching.messageArrived(fromOneTagTwo);
  EXPECT_EQ(matching.postReceive({receiveWork("other tag"), at::zeros({1}), 1, 3}), nullptr);
  EXPECT_EQ(matching.postReceive({receiveWork("other source"), at::zeros({1}), 2, 2}), nullptr);
  EXPECT_EQ(matching.postReceive({receiveWork("any source"), at::zeros({1}), -1, 2}), fromOneTagTwo);
}

TEST(Matching, MessagesOfOnePeerAndTagAreReceivedInArrivalOrder) {
  Matching matching;
  auto first = matching.messageArriving(1, headerWithTag(4));
  auto second = matching.messageArriving(1, headerWithTag(4));
  matching.messageArrived(second);  // payloads may complete out of order
  matching.messageArrived(first);
  EXPECT_EQ(matching.postReceive({receiveWork("a"), at::zeros({1}), 1, 4}), first);
  EXPECT_EQ(matching.postReceive({receiveWork("b"), at::zeros({1}), 1, 4}), second);
}

TEST(Matching, ReceivesAreServedInPostingOrderAnySourceIncluded) {
  Matching matching;
  auto any = receiveWork("any");
  auto fromTwo = receiveWork("from 2");
  matching.postReceive({any, at::zeros({1}), -1, 0});
  matching.postReceive({fromTwo, at::zeros({1}), 2, 0});
  EXPECT_EQ(matching.messageArriving(2, headerWithTag(0))->receiver, any);
  EXPECT_EQ(matching.messageArriving(2, headerWithTag(0))->receiver, fromTwo);
  EXPECT_FALSE(matching.messageArriving(2, headerWithTag(0))->receiver);
}

TEST(Matching, AReceiveThatTimedOutTakesNoMessage) {
  Matching matching;
  auto timedOut = receiveWork("timed out");
  auto waiting = receiveWork("waiting");
  matching.postReceive({timedOut, at::zeros({1}), 1, 0});
  matching.postReceive({waiting, at::zeros({1}), 1, 0});
  timedOut->markFailed(std::make_exception_ptr(std::runtime_error("timed out")));
  EXPECT_EQ(matching.messageArriving(1, headerWithTag(0))->receiver, waiting);
}

TEST(Matching, ARejectionIsReportedByTheOldestWaitingReceiveOnAUserTag) {
  Matching matching;
  auto internal = receiveWork("internal");
  auto otherPeer = receiveWork("from 3");
  auto any = receiveWork("any");
  matching.postReceive({internal, at::zeros({1}), 1, qccl::p2p::kCheckTag});
  matching.postReceive({otherPeer, at::zeros({1}), 3, 0});
  matching.postReceive({any, at::zeros({1}), -1, 9});
  EXPECT_EQ(matching.withdrawReporter(1), any);
  EXPECT_EQ(matching.withdrawReporter(1), nullptr);
  // Withdrawn: a message for it now waits for another receive.
  EXPECT_FALSE(matching.messageArriving(1, headerWithTag(9))->receiver);
}

TEST(Matching, ADeadPeerDropsItsReceivesAndUnfinishedMessagesOnly) {
  Matching matching;
  auto fromOne = receiveWork("from 1");
  auto fromTwo = receiveWork("from 2");
  auto waitingForPayload = receiveWork("payload coming");
  matching.postReceive({fromOne, at::zeros({1}), 1, 0});
  matching.postReceive({fromTwo, at::zeros({1}), 2, 0});
  auto unfinished = matching.messageArriving(1, headerWithTag(5));
  matching.postReceive({waitingForPayload, at::zeros({1}), 1, 5});
  auto complete = matching.messageArriving(1, headerWithTag(6));
  matching.messageArrived(complete);
  auto dropped = matching.dropPeer(1);
  ASSERT_EQ(dropped.size(), 2u);
  EXPECT_EQ(dropped[0], fromOne);
  EXPECT_EQ(dropped[1], waitingForPayload);
  EXPECT_EQ(matching.postReceive({receiveWork("late"), at::zeros({1}), 1, 6}), complete);  // still receivable
  EXPECT_EQ(matching.clear(), std::vector<Work>{fromTwo});
}

} // namespace
