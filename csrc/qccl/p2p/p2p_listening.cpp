// The receiving side of P2PEngine (p2p_engine.h): a listener thread per peer takes each
// control message in, matches it (matching.h), receives its payload, and delivers it or
// reports a rejection; a dead peer fails what involves it.

#include <array>
#include <cstring>
#include <deque>

#include <ATen/ATen.h>

#include "qccl/common/errors.h"
#include "qccl/common/tensor_bytes.h"
#include "qccl/p2p/p2p_engine.h"
#include "qccl/p2p/payload_codec.h"
#include "qccl/p2p/rejection.h"

namespace qccl::p2p {
namespace {

using WorkPtr = c10::intrusive_ptr<c10d::Work>;

// A listener waits for the next message from its peer for as long as the group lives;
// Gloo turns any timed-out wait into an error on every connection of the group, so this
// wait has no practical limit. shutdown() cuts it short.
constexpr auto kListenForever = std::chrono::hours(24 * 365);

} // namespace

void P2PEngine::listen(int peer) {
  // kListenWindow control messages stay posted (message.h); Gloo fills them in order.
  std::deque<ControlReceive> window;
  StagingReceive staging;
  try {
    while (window.size() < static_cast<size_t>(kListenWindow)) {
      window.push_back(postControlReceive(peer, at::empty({kControlBytes}, at::kByte)));
    }
    while (true) {
      auto next = std::move(window.front());
      window.pop_front();
      waitListening(peer, next.work, kListenForever);
      Header header;
      std::memcpy(&header, next.bytes.const_data_ptr(), sizeof(Header));
      TORCH_CHECK(header.magic == kMagic, "a message that is not qccl's point-to-point protocol (version 2) arrived");
      if (header.kind == Kind::Data || header.kind == Kind::StagedData) {
        onData(peer, header, next.bytes, [&](at::Tensor& payload) { receivePayload(peer, header, payload, staging); });
      } else if (isNotice(header.kind)) {
        onNotice(peer, header, next.bytes);
      } else {
        onStatus(peer, header);
      }
      // Posted again only now, so that the message is delivered first; the rest of the
      // window takes what arrives meanwhile.
      window.push_back(postControlReceive(peer, next.bytes));
    }
  } catch (...) {
    peerFailed(peer, describeException(std::current_exception()));
  }
}

void P2PEngine::listenOnHost(int peer) {
  try {
    auto& reader = *hostReaders_[peer];
    while (mailbox_->awaitFrom(peer)) {
      {
        std::unique_lock<std::mutex> lock(reader.waitersMutex);
        reader.noWaiters.wait(lock, [&] { return reader.waiters == 0; });
      }
      std::lock_guard<std::mutex> role(reader.role);
      readAvailable(peer);
      std::lock_guard<std::mutex> lock(reader.waitersMutex);
      if (reader.waiters > 0) {
        // One came while this read ran and may sleep on a message this read took.
        mailbox_->wakeReceivers(peer);
      }
    }
    peerFailed(peer, "its process ended or closed the group");
  } catch (...) {
    peerFailed(peer, describeException(std::current_exception()));
  }
}

void P2PEngine::readWhileWaiting(int peer, P2PWork& work, std::chrono::steady_clock::time_point deadline) {
  auto& reader = *hostReaders_[peer];
  {
    std::lock_guard<std::mutex> lock(reader.waitersMutex);
    ++reader.waiters;
  }
  try {
    // Gone or past the deadline: the listener or the work's own wait takes it from there.
    // Another waiter's read may complete this work: it wakes this one (wakeReceivers).
    auto done = [&] { return work.isCompleted(); };
    while (!done() && mailbox_->awaitFrom(peer, deadline, done)) {
      std::lock_guard<std::mutex> role(reader.role);  // the listener may hold it now
      readAvailable(peer);
      std::lock_guard<std::mutex> lock(reader.waitersMutex);
      if (reader.waiters > 1) {
        mailbox_->wakeReceivers(peer);  // this read may have completed another's work
      }
    }
  } catch (...) {
    peerFailed(peer, describeException(std::current_exception()));  // as the listener would
  }
  std::lock_guard<std::mutex> lock(reader.waitersMutex);
  if (--reader.waiters == 0) {
    reader.noWaiters.notify_all();
  }
}

void P2PEngine::readAvailable(int peer) {
  // Each message is its header and its payload (p2p_engine.h); an inline one is read
  // behind the header, as it arrives over Gloo, so that the handlers below serve both.
  auto& reader = *hostReaders_[peer];
  auto* bytes = static_cast<uint8_t*>(reader.control.mutable_data_ptr());
  while (mailbox_->ready(peer)) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!peerFailure_[peer].empty()) {
        return;  // a reader failed mid-message: what follows is not a message boundary
      }
    }
    Header header;
    if (mailbox_->takeStatus(peer, reader.status.data())) {
      std::memcpy(&header, reader.status.data(), sizeof(Header));
      TORCH_CHECK(header.magic == kMagic, "a status that is not qccl's point-to-point protocol arrived");
      onStatus(peer, header);
      continue;
    }
    mailbox_->read(peer, bytes, sizeof(Header));
    std::memcpy(&header, bytes, sizeof(Header));
    TORCH_CHECK(header.magic == kMagic, "a message that is not qccl's point-to-point protocol arrived");
    if (carriesInline(header)) {
      mailbox_->read(peer, bytes + sizeof(Header), static_cast<uint64_t>(header.payloadBytes));
    }
    if (header.kind == Kind::Data) {
      onData(peer, header, reader.control, [&](at::Tensor& payload) {
        mailbox_->read(peer, payload.mutable_data_ptr(), static_cast<uint64_t>(header.payloadBytes));
      });
    } else if (isNotice(header.kind)) {
      onNotice(peer, header, reader.control);
    } else {
      onStatus(peer, header);
    }
  }
}

P2PEngine::ControlReceive P2PEngine::postControlReceive(int peer, at::Tensor bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  TORCH_CHECK(!stopping_, "the process group is shutting down");
  std::vector<at::Tensor> target{bytes};
  auto work = transport_.gloo().recv(target, peer, kControlSlot);
  return ControlReceive{std::move(bytes), std::move(work)};
}

void P2PEngine::waitListening(int peer, const WorkPtr& work, std::chrono::milliseconds limit) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      work->abort();
    }
    listenerWaits_[peer] = work;
  }
  const bool completed = work->wait(limit);
  std::lock_guard<std::mutex> lock(mutex_);
  listenerWaits_[peer].reset();
  TORCH_CHECK(completed && !stopping_, "the process group is shutting down");
}

void P2PEngine::onData(
    int peer,
    const Header& header,
    const at::Tensor& control,
    const std::function<void(at::Tensor& payload)>& takePayload) {
  bool closed = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed = !pairClosed_[peer].empty();
  }
  if (closed) {  // read off the wire and dropped: no receive may take it
    if (!carriesInline(header)) {
      auto discarded = at::empty({header.payloadBytes}, at::kByte);
      takePayload(discarded);
    }
    return;
  }
  std::shared_ptr<Inbound> message;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    message = matching_.messageArriving(peer, header);
  }
  // Straight into the receive's tensor when nothing needs checking or decoding later.
  message->intoReceiveTensor = message->receiver && header.codec == static_cast<int64_t>(CodecKind::None) &&
      mismatch(config_, header, message->receiveTensor).empty();
  message->payload = message->intoReceiveTensor ? asBytes(message->receiveTensor)
                                                : at::empty({header.payloadBytes}, at::kByte);
  if (carriesInline(header)) {  // copied out: the control buffer takes the next message
    message->payload.copy_(control.narrow(0, sizeof(Header), header.payloadBytes));
  } else {
    takePayload(message->payload);
  }

  c10::intrusive_ptr<P2PWork> receiver;
  at::Tensor tensor;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (matching_.messageArrived(message)) {
      receiver = message->receiver;
      tensor = message->receiveTensor;
    }
  }
  if (receiver) {
    deliver(*message, *receiver, tensor);
  }
}

void P2PEngine::receivePayload(int peer, const Header& header, at::Tensor& payload, StagingReceive& staging) {
  if (header.kind == Kind::StagedData) {
    TORCH_CHECK(staging.posted() && fitsStaging(header.payloadBytes), "rank ", peer,
                " sent a payload of ", header.payloadBytes, " bytes to a staging receive this rank has not posted");
    waitListening(peer, staging.tail(), transport_.timeout());
    waitListening(peer, staging.body(), transport_.timeout());  // already in: it came first
    staging.copyTo(payload);
    postStaging(peer, staging);
    return;
  }
  auto parts = payloadParts(payload);
  std::vector<at::Tensor> body{parts[0]};
  std::vector<at::Tensor> tail{parts[1]};
  auto bodyWork = transport_.gloo().recv(body, peer, kPayloadSlot);
  waitListening(peer, transport_.gloo().recv(tail, peer, kPayloadSlot), transport_.timeout());
  waitListening(peer, bodyWork, transport_.timeout());  // already in: it came first
  if (shortControlMessages_ && fitsStaging(header.payloadBytes) && !staging.posted()) {
    postStaging(peer, staging);  // the sender sends the next such payload there
  }
}

void P2PEngine::postStaging(int peer, StagingReceive& staging) {
  std::lock_guard<std::mutex> lock(mutex_);
  TORCH_CHECK(!stopping_, "the process group is shutting down");
  staging.post(transport_.gloo(), peer);
}

void P2PEngine::onStatus(int peer, const Header& status) {
  TORCH_CHECK(status.kind == Kind::Rejected, "rank ", peer, " sent an unknown point-to-point status ",
              static_cast<int64_t>(status.kind));
  // The send completed long ago. The sender's first receive from `peer` still waiting for
  // a message reports the rejection (a rank that sends and then waits for an answer
  // learns of it there, instead of waiting for an answer that will not come); without
  // one, the next send or receive involving `peer` does. The receive that reports it is
  // withdrawn without having taken a message.
  const auto text = rejectionText(rank_, peer, status);
  while (true) {
    c10::intrusive_ptr<P2PWork> receiver;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      receiver = matching_.withdrawReporter(peer);
      if (!receiver) {
        unreported_[peer].push_back(text);
        return;
      }
    }
    if (receiver->markFailed(reportingError(rank_, *receiver, {text}))) {
      return;
    }
    // It timed out meanwhile (and raised that): the next candidate reports it.
  }
}

void P2PEngine::onNotice(int peer, const Header& header, const at::Tensor& control) {
  TORCH_CHECK(carriesInline(header), "rank ", peer, " sent a notice of ", header.payloadBytes, " bytes");
  const auto* bytes = static_cast<const char*>(control.const_data_ptr()) + sizeof(Header);
  const std::string text(bytes, static_cast<size_t>(header.payloadBytes));
  if (header.kind == Kind::PairClosed) {
    closePair(peer, "rank " + std::to_string(peer) + " closed it: " + text, false);
  } else if (onGroupFailed_) {
    onGroupFailed_(peer, text);
  }
}

void P2PEngine::peerFailed(int peer, const std::string& why) {
  std::vector<c10::intrusive_ptr<P2PWork>> failed;
  std::string message;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      return;  // shutdown() fails what is left
    }
    message = "rank " + std::to_string(peer) + " is unreachable from rank " + std::to_string(rank_) +
        " (it died, or closed the process group): " + why;
    peerFailure_[peer] = message;
    failed = takePending(peer);
  }
  failAll(failed, message);
}

// --- delivery ------------------------------------------------------------------

void P2PEngine::deliver(Inbound& message, P2PWork& receiver, at::Tensor& tensor) {
  const auto problem = mismatch(config_, message.header, tensor);
  if (!problem.empty()) {
    // The status goes out first: whatever the receiving program sends once its receive
    // has failed reaches the sender after it.
    sendRejection(message, tensor);
    receiver.markFailed(std::make_exception_ptr(c10::ValueError(
        {__func__, __FILE__, __LINE__},
        "qccl: " + receiver.name() + " on rank " + std::to_string(rank_) + " got a message from rank " +
            std::to_string(message.src) + " that does not fit: " + problem)));
    return;
  }
  if (!message.intoReceiveTensor) {
    decodePayload(message.payload, static_cast<CodecKind>(message.header.codec), message.header.block, tensor);
  }
  message.payload = at::Tensor();  // free a staging buffer now
  receiver.setSourceRank(message.src);
  receiver.markSucceeded();
}

} // namespace qccl::p2p
