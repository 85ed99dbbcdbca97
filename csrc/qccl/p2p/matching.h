#pragma once

// Pairs receives with messages (docs/p2p.md): a message goes to the oldest posted receive
// whose source (or any source) and tag match it; a receive takes the oldest unmatched
// message that matches it. Both lists keep posting and arrival order, so two messages
// from one peer with one tag are received in the order they were sent, as in MPI.
//
// No threads, no transport, no lock: the engine (p2p_engine.h) calls it under its own
// mutex, and the tests drive it directly (tests/cpp/matching_test.cpp).

#include <list>
#include <memory>
#include <vector>

#include "qccl/p2p/message.h"
#include "qccl/p2p/p2p_work.h"

namespace qccl::p2p {

struct PostedReceive {
  c10::intrusive_ptr<P2PWork> work;
  at::Tensor tensor;
  int src;  // -1: any
  int64_t tag;
};

// A message that has arrived (or is arriving) and the receive it is matched to, if any.
struct InboundMessage {
  int src = -1;
  Header header;
  at::Tensor payload;            // the receive's own bytes, or a staging buffer
  bool intoReceiveTensor = false;
  bool arrived = false;          // the payload is complete
  c10::intrusive_ptr<P2PWork> receiver;
  at::Tensor receiveTensor;
};

class Matching {
 public:
  // A receive is posted. Returns the matching message if it has already arrived (it
  // leaves the queue: the caller delivers it); otherwise the receive is matched to a
  // message still arriving, or waits for one, and null is returned.
  std::shared_ptr<InboundMessage> postReceive(const PostedReceive& receive);
  // A message from `src` starts arriving: matched to the oldest posted receive that fits
  // (receives that completed meanwhile, by their timeout, are dropped first).
  std::shared_ptr<InboundMessage> messageArriving(int src, const Header& header);
  // Its payload is in. True when it has its receive: it leaves the queue, and the caller
  // delivers it to message->receiver. Otherwise it waits for a receive.
  bool messageArrived(const std::shared_ptr<InboundMessage>& message);
  // The receive that reports a rejection by `peer`: the oldest one still waiting on a
  // user tag from `peer` or from any source, withdrawn. Null if there is none.
  c10::intrusive_ptr<P2PWork> withdrawReporter(int peer);
  // `peer` died: its posted receives and the messages it had not finished sending are
  // dropped (complete messages stay receivable, unless `evenComplete`: the pair was
  // closed, and a message that came late must not be taken by a later receive).
  // Returns the receives to fail.
  std::vector<c10::intrusive_ptr<P2PWork>> dropPeer(int peer, bool evenComplete = false);
  // Shutdown: everything is dropped. Returns every receive to fail.
  std::vector<c10::intrusive_ptr<P2PWork>> clear();

 private:
  std::list<PostedReceive> posted_;                    // in posting order
  std::list<std::shared_ptr<InboundMessage>> inbound_;  // not yet delivered, in arrival order
};

} // namespace qccl::p2p
