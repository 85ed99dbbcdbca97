#pragma once

// qccl's point-to-point protocol over Gloo (docs/p2p.md).
//
// Gloo matches a send with a receive of the same size by (peer, slot) and aborts the
// process when the sizes differ; its sends complete only once the receive is posted. qccl
// puts a header in front of every message instead, so that:
//   - each rank listens to every peer of the group (one thread per peer, from the group's
//     creation): a message is taken in as soon as it arrives, into the posted
//     receive's tensor or into a staging buffer, so a send never waits for its receive
//     to be posted;
//   - messages are matched to receives by (source, tag) in arrival and posting order,
//     any-source receives included, with the user's tag carried in the header;
//   - the receiver checks dtype, size and codec before writing into a tensor, and a
//     mismatch fails the receive and the send (a status message goes back), never
//     memory; when the send had already completed, the sender's next send reports it
//     and the receiver discards that send's message: a send that raises delivered nothing;
//   - floating-point payloads may travel encoded (Config::p2pCodec);
//   - a peer that dies fails every send and receive involving it at once.

#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "qccl/backend/async_waiter.h"
#include "qccl/common/config.h"
#include "qccl/p2p/message.h"
#include "qccl/p2p/p2p_work.h"
#include "qccl/transport/gloo_transport.h"

namespace qccl::p2p {

class P2PEngine {
 public:
  P2PEngine(GlooTransport& transport, const Config& config, int rank, int size);
  ~P2PEngine();
  P2PEngine(const P2PEngine&) = delete;
  P2PEngine& operator=(const P2PEngine&) = delete;

  // Posts the message and returns at once; the work completes when the receiver has it.
  c10::intrusive_ptr<P2PWork> send(const at::Tensor& tensor, int dst, int64_t tag);
  // `src` -1: from any source. Completes when a message has been written into `tensor`.
  c10::intrusive_ptr<P2PWork> recv(const at::Tensor& tensor, int src, int64_t tag);

  // Stops listening and fails every pending send and receive with `why`; idempotent.
  void shutdown(const std::string& why);

 private:
  // A message that has arrived (or is arriving) and the receive it is matched to, if any.
  struct Inbound {
    int src = -1;
    Header header;
    at::Tensor payload;            // the receive's own bytes, or a staging buffer
    bool intoReceiveTensor = false;
    bool arrived = false;          // the payload is complete
    c10::intrusive_ptr<P2PWork> receiver;
    at::Tensor receiveTensor;
  };
  struct PostedRecv {
    c10::intrusive_ptr<P2PWork> work;
    at::Tensor tensor;
    int src;  // -1: any
    int64_t tag;
  };

  void listen(int peer);
  void onData(int peer, const Header& header, const at::Tensor& control);
  void onStatus(int peer, const Header& header);
  void peerFailed(int peer, const std::string& why);

  // Checks the message against the receive, then decodes it into the receive's tensor;
  // returns the status to send back (Delivered or Rejected).
  Kind deliver(Inbound& message, P2PWork& receiver, at::Tensor& tensor);
  // Tells the sender of a staged message that a receive rejected it, and has its next
  // message discarded so that the send of that one reports it.
  void rejectStaged(const Inbound& message, const at::Tensor& tensor);
  // Whether the message arriving from `peer` is the one that reports its earlier
  // RejectedLate statuses; if so, answers Discarded at once.
  bool discardForLateRejection(int peer, const Header& header);
  // Why `message` does not fit a receive into `tensor`; empty when it does.
  std::string mismatch(const Header& message, const at::Tensor& tensor) const;
  void sendStatus(int peer, const Header& message, Kind status, const at::Tensor& tensor);
  // The status for `message`; `tensor` is the receive's, for what a rejection expected.
  Header statusReply(const Header& message, Kind status, const at::Tensor& tensor) const;
  // Posts the control message (and a payload too large to go inline) to Gloo; a
  // background waiter keeps the Gloo works alive until they are done.
  void post(int peer, const Header& header, const at::Tensor& payload);
  // Waits for a Gloo receive the listener posted, abortable by shutdown().
  void waitListening(int peer, const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds limit);
  // Raises if `peer` died.
  void raiseIfBroken(int peer, const std::string& op);
  std::string describeMessage(int64_t dtype, int64_t numel, int64_t codec) const;
  // "send to rank 1 (tag 0) on rank 0 (message #3) was rejected: it carried ... but ...",
  // from a Rejected or RejectedLate status that `peer` sent.
  std::string rejectionText(int peer, const Header& status) const;

  GlooTransport& transport_;
  const Config config_;
  const int rank_;
  const int size_;

  std::mutex mutex_;  // everything below
  bool stopping_ = false;
  std::vector<std::thread> listeners_;
  std::vector<c10::intrusive_ptr<c10d::Work>> listenerWaits_;  // per peer, for abort
  std::vector<std::string> peerFailure_;     // per peer: why it is unreachable
  // Per peer, as a sender: its RejectedLate statuses, until a Discarded one reports them.
  std::vector<std::vector<std::string>> lateRejections_;
  // Per peer, as a receiver: a staged message of its was rejected, so its next message is
  // discarded (docs/p2p.md).
  std::vector<bool> discardNextFrom_;
  std::vector<uint64_t> nextSeq_;            // per peer
  std::vector<std::map<uint64_t, c10::intrusive_ptr<P2PWork>>> pendingSends_;
  std::list<PostedRecv> posted_;                   // in posting order
  // Messages arrived or arriving and not yet delivered, in arrival order.
  std::list<std::shared_ptr<Inbound>> inbound_;

  std::mutex postMutex_;  // keeps each header next to its payload on the wire
  AsyncWaiter glooSends_;
};

} // namespace qccl::p2p
