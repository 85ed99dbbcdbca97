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
//   - a send completes once its bytes are out of the caller's tensor (a small payload is
//     copied into the control message, a large one has been written by Gloo), without
//     waiting for the receiver: a ping-pong costs one round trip, as on Gloo;
//   - the receiver checks dtype, size and codec before writing into a tensor, and a
//     mismatch fails the receive, never memory, and goes back to the sender as a
//     Rejected status, which fails the sender's first receive from that peer still
//     waiting for a message or else its next send or receive involving that peer; the
//     call that reports it has done nothing;
//   - floating-point payloads may travel encoded (Config::p2pCodec);
//   - a peer that dies fails every send and receive involving it at once;
//   - a send or a receive from one peer that times out closes the pair, on both sides
//     (a notice tells the peer): a message that comes late must not be taken by the
//     next receive, which would return it as the answer to another call. A receive from
//     any source that times out only withdraws (a poll);
//   - a group that failed (docs/errors.md, rule 9) is told to every peer
//     (tellPeersGroupFailed), whose engine hands the notice to the group (OnGroupFailed);
//     failGroup() then fails every pending send and receive, and later ones raise.
//
// On one host (a Mailbox given) the same messages travel through shared memory instead
// of Gloo: each one is its header and its payload, appended to the sender's stream to the
// receiver (transport/shm/mailbox.h), which the receiver's listener reads; rejections go
// as status records, which never wait, so that a listener never waits for the peer it
// answers. A send returns once its bytes are in the stream.

#include <array>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ops/empty.h>

#include "qccl/p2p/async_waiter.h"
#include "qccl/p2p/host_outbox.h"
#include "qccl/common/config.h"
#include "qccl/p2p/matching.h"
#include "qccl/p2p/message.h"
#include "qccl/p2p/p2p_work.h"
#include "qccl/p2p/staging_receive.h"
#include "qccl/transport/gloo_transport.h"
#include "qccl/transport/shm/mailbox.h"

namespace qccl::p2p {

class P2PEngine {
 public:
  // Called on a listener thread when `peer` says its group failed, with its reason.
  using OnGroupFailed = std::function<void(int peer, const std::string& why)>;

  // With `mailbox` (every rank of the group on this host), messages go through it.
  P2PEngine(
      GlooTransport& transport,
      const Config& config,
      int rank,
      int size,
      OnGroupFailed onGroupFailed = nullptr,
      std::unique_ptr<shm::Mailbox> mailbox = nullptr);
  ~P2PEngine();
  P2PEngine(const P2PEngine&) = delete;
  P2PEngine& operator=(const P2PEngine&) = delete;

  // Posts the message and returns at once; the work completes when the caller's tensor
  // is no longer needed (at once for a payload that goes inline). It fails without
  // sending anything when it reports an earlier rejection by `dst`.
  c10::intrusive_ptr<P2PWork> send(const at::Tensor& tensor, int dst, int64_t tag);
  // `src` -1: from any source. Completes when a message has been written into `tensor`;
  // fails without taking a message when it reports an earlier rejection by `src` (by any
  // peer for -1).
  c10::intrusive_ptr<P2PWork> recv(const at::Tensor& tensor, int src, int64_t tag);

  // Bytes this rank's messages put through shared memory (0 without a mailbox).
  uint64_t bytesThroughMemory() const {
    return mailbox_ ? mailbox_->bytesWritten() : 0;
  }

  // Stops listening and fails every pending send and receive with `why`; idempotent.
  void shutdown(const std::string& why);

  // Sends every reachable peer the notice that this rank's group failed, saying `why`
  // (truncated to one control message). Returns without waiting for the transfers.
  void tellPeersGroupFailed(const std::string& why);
  // Fails every pending send and receive (the check's own included) with `why`; later
  // sends and receives raise it. Listeners go on (a notice may still come). The first
  // call counts; returns at once, from any thread.
  void failGroup(const std::string& why);

 private:
  using Inbound = InboundMessage;

  // A control message buffer and the Gloo receive posted into it.
  struct ControlReceive {
    at::Tensor bytes;
    c10::intrusive_ptr<c10d::Work> work;
  };

  void listen(int peer);
  void listenOnHost(int peer);  // the same, through the mailbox
  // Handles every message `peer` has put in the mailbox so far; the caller holds the
  // peer's reader role (HostReader).
  void readAvailable(int peer);
  // A receive's waiter reading `peer`'s messages itself (P2PWork::readWhileWaiting).
  void readWhileWaiting(int peer, P2PWork& work, std::chrono::steady_clock::time_point deadline);
  ControlReceive postControlReceive(int peer, at::Tensor bytes);
  // Takes a message in; `takePayload` writes a payload that did not come inline into its
  // argument (sized to it).
  void onData(
      int peer,
      const Header& header,
      const at::Tensor& control,
      const std::function<void(at::Tensor& payload)>& takePayload);
  // Receives the payload of a message that did not go inline into `payload`.
  void receivePayload(int peer, const Header& header, at::Tensor& payload, StagingReceive& staging);
  // Posts `staging` (again), unless the group is shutting down.
  void postStaging(int peer, StagingReceive& staging);
  void onStatus(int peer, const Header& header);
  void onNotice(int peer, const Header& header, const at::Tensor& control);
  // Sends `peer` a notice of `kind` saying `why`; the caller holds postMutex_.
  void postNotice(int peer, Kind kind, const std::string& why);
  // Closes the pair with `peer` (see above): fails what is pending with it, drops what
  // it sent, and makes later sends and receives with it raise; tells the peer unless
  // the notice came from it.
  void closePair(int peer, const std::string& why, bool tellPeer);
  // Closes the pair when a wait gives up on `work`, a send to or receive from `peer`.
  void closePairOnTimeout(P2PWork& work, int peer);
  void peerFailed(int peer, const std::string& why);

  // Checks the message against the receive, then decodes it into the receive's tensor;
  // when it does not fit, tells the sender and fails the receive.
  void deliver(Inbound& message, P2PWork& receiver, at::Tensor& tensor);
  // Tells the sender of `message` that a receive into `tensor` rejected it.
  void sendRejection(const Inbound& message, const at::Tensor& tensor);
  // Takes the rejections `peer` (every peer for -1) reported that no call has raised yet.
  std::vector<std::string> takeUnreported(int peer);
  // Posts the control message (and a payload too large to go inline) to Gloo; a
  // background waiter keeps the Gloo works alive until they are done. Returns the work
  // that completes when Gloo has written every part; null when the message is written
  // already (through the mailbox).
  c10::intrusive_ptr<WaitingWork> post(int peer, const Header& header, const at::Tensor& payload);
  void postOverGloo(int peer, const Header& header, const at::Tensor& payload, std::vector<c10::intrusive_ptr<c10d::Work>>& parts);
  // Waits for a Gloo receive the listener posted, abortable by shutdown().
  void waitListening(int peer, const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds limit);
  // Takes the pending sends to `peer` and receives from it (every peer for -1) out of
  // the engine, with the messages it had not finished sending (`evenComplete`: all of
  // its messages). Under mutex_; the caller fails them (failAll) once it is released.
  std::vector<c10::intrusive_ptr<P2PWork>> takePending(int peer, bool evenComplete = false);
  // Fails each work with "<its name> on rank <r>" and `why`.
  void failAll(const std::vector<c10::intrusive_ptr<P2PWork>>& works, const std::string& why) const;
  // Raises if `peer` died, its pair was closed, or the group failed.
  void raiseIfBroken(int peer, const std::string& op);
  // Why a send to or receive from `peer` must raise now; empty if it may go on. Under mutex_.
  const std::string& brokenFor(int peer) const;

  GlooTransport& transport_;
  const Config config_;
  const int rank_;
  const int size_;
  // Control messages carry only the bytes in use (listeners always post kControlBytes).
  const bool shortControlMessages_;
  const OnGroupFailed onGroupFailed_;

  std::mutex mutex_;  // everything below
  bool stopping_ = false;
  std::vector<std::thread> listeners_;
  std::vector<c10::intrusive_ptr<c10d::Work>> listenerWaits_;  // per peer, for abort
  std::vector<std::string> peerFailure_;     // per peer: why it is unreachable
  std::string groupFailure_;                 // failGroup()'s reason, once called
  std::vector<std::string> pairClosed_;      // per peer: why the pair was closed
  // What a P2PWork's timeout reaches: this engine until shutdown(), then nothing (a
  // work may be waited on after its group is gone).
  struct TimeoutSink {
    explicit TimeoutSink(P2PEngine* engine) : engine(engine) {}
    std::mutex mutex;
    P2PEngine* engine;
    // Waiters reading the mailbox (readWhileWaiting) right now: shutdown() waits for them.
    int readers = 0;
    std::condition_variable noReaders;
  };
  std::shared_ptr<TimeoutSink> timeoutSink_;
  // Per peer, as a sender: its Rejected statuses that no call has reported yet.
  std::vector<std::vector<std::string>> unreported_;
  std::vector<uint64_t> nextSeq_;            // per peer
  // Per peer: it keeps a staging receive posted for this rank's payloads (message.h).
  std::vector<bool> peerStages_;
  // Per peer: sends whose payload Gloo is still writing from the caller's tensor (and
  // some that have completed since the last send to that peer, which prunes them).
  std::vector<std::map<uint64_t, c10::intrusive_ptr<P2PWork>>> pendingSends_;
  Matching matching_;  // posted receives and inbound messages

  std::mutex postMutex_;  // keeps each header next to its payload on the wire
  AsyncWaiter glooSends_;
  const std::unique_ptr<shm::Mailbox> mailbox_;  // null: every message goes through Gloo
  std::vector<std::unique_ptr<HostOutbox>> outboxes_;  // by peer, with the mailbox
  // By peer, with the mailbox: who reads that peer's stream now, one at a time, with the
  // buffers a message is read into. Its listener reads only while no receive's waiter
  // reads for itself (readWhileWaiting), so a waiter's receive is completed by its own
  // read, never behind its back while it sleeps.
  struct HostReader {
    std::mutex role;
    at::Tensor control = at::empty({kControlBytes}, at::kByte);
    std::array<uint8_t, shm::Mailbox::kStatusBytes> status{};
    std::mutex waitersMutex;
    std::condition_variable noWaiters;
    int waiters = 0;  // receives' waiters reading now or about to
  };
  std::vector<std::unique_ptr<HostReader>> hostReaders_;
  std::mutex statusMutex_;  // one status record at a time into the mailbox
};

} // namespace qccl::p2p
