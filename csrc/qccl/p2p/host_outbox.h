#pragma once

// Point-to-point messages to one peer through the shared-memory mailbox
// (transport/shm/mailbox.h), in the order they are posted. A message writes into the
// stream on the caller's thread when nothing is queued and its payload is small; any
// other waits its turn on a thread of the outbox's own, so that a send of a large tensor
// returns at once, as it does over Gloo, while its bytes stream to the receiver.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <ATen/core/Tensor.h>

#include "qccl/p2p/message.h"
#include "qccl/transport/shm/mailbox.h"
#include "qccl/work/work.h"

namespace qccl::p2p {

class HostOutbox {
 public:
  HostOutbox(shm::Mailbox& mailbox, int rank, int peer, std::chrono::milliseconds timeout);
  ~HostOutbox();  // stop()
  HostOutbox(const HostOutbox&) = delete;
  HostOutbox& operator=(const HostOutbox&) = delete;

  // Writes the header and the payload (`header.payloadBytes` of it); returns null when
  // they are in the stream already, else the work that completes once they are (or fails
  // when the peer went away first). The caller keeps `payload` unchanged until then.
  c10::intrusive_ptr<FutureWork> post(const Header& header, const at::Tensor& payload);
  // Fails what is queued and ends the thread (the mailbox must be aborted first if a
  // write may be waiting for room). Idempotent.
  void stop();

 private:
  struct Queued {
    Header header;
    at::Tensor payload;
    c10::intrusive_ptr<FutureWork> written;
  };
  void write(const Header& header, const at::Tensor& payload);
  void run();

  shm::Mailbox& mailbox_;
  const int rank_;
  const int peer_;
  const std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  bool writing_ = false;  // the thread writes a message now
  bool stopping_ = false;
  std::thread thread_;  // started with the first queued message
};

} // namespace qccl::p2p
