#include "qccl/p2p/p2p_engine.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <ATen/ATen.h>

#include "qccl/common/errors.h"
#include "qccl/p2p/payload_codec.h"
#include "qccl/p2p/rejection.h"
#include "qccl/p2p/waiting_work.h"

namespace qccl::p2p {

using WorkPtr = c10::intrusive_ptr<c10d::Work>;

P2PEngine::P2PEngine(
    GlooTransport& transport,
    const Config& config,
    int rank,
    int size,
    OnGroupFailed onGroupFailed,
    std::unique_ptr<shm::Mailbox> mailbox)
    : transport_(transport),
      config_(config),
      rank_(rank),
      size_(size),
      shortControlMessages_(transportReadsShortMessages()),
      onGroupFailed_(std::move(onGroupFailed)),
      listenerWaits_(size),
      peerFailure_(size),
      pairClosed_(size),
      timeoutSink_(std::make_shared<TimeoutSink>(this)),
      unreported_(size),
      nextSeq_(size, 0),
      peerStages_(size, false),
      pendingSends_(size),
      mailbox_(std::move(mailbox)) {
  if (mailbox_) {
    for (int peer = 0; peer < size_; ++peer) {
      outboxes_.push_back(peer == rank_ ? nullptr
                                        : std::make_unique<HostOutbox>(*mailbox_, rank_, peer, transport_.timeout()));
      hostReaders_.push_back(std::make_unique<HostReader>());
    }
  }
  // From the start: a peer's first message must find this rank listening even if this
  // rank's own first call on the group comes after that peer waits for it.
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) {
      listeners_.emplace_back([this, peer] { mailbox_ ? listenOnHost(peer) : listen(peer); });
    }
  }
}

P2PEngine::~P2PEngine() {
  shutdown("the process group was destroyed");
}

// --- the calls ----------------------------------------------------------------------------

c10::intrusive_ptr<P2PWork> P2PEngine::send(const at::Tensor& tensor, int dst, int64_t tag) {
  raiseIfBroken(dst, "send to rank " + std::to_string(dst));
  const auto codec = payloadCodec(config_, tensor);
  auto payload = encodePayload(tensor, codec, config_.block);
  auto work = c10::make_intrusive<P2PWork>(
      rank_, c10d::OpType::SEND, "send to rank " + std::to_string(dst) + tagText(tag), tensor,
      transport_.timeout(), dst);
  closePairOnTimeout(*work, dst);

  Header header;
  header.kind = Kind::Data;
  header.tag = tag;
  header.dtype = static_cast<int64_t>(tensor.scalar_type());
  header.numel = tensor.numel();
  header.codec = static_cast<int64_t>(codec);
  header.block = config_.block;
  header.payloadBytes = payload.numel();
  // A payload that goes inline is copied into the control message by post(), so the
  // caller's tensor is free as soon as post() returns; a larger one is read by Gloo
  // while it writes, which is when Gloo's own send completes.
  const bool copiedInline = carriesInline(header);
  std::vector<std::string> reported;
  c10::intrusive_ptr<WaitingWork> transfer;
  {
    std::lock_guard<std::mutex> order(postMutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      QCCL_CHECK_VALUE(!stopping_, "send on rank ", rank_, ": the process group was shut down");
      if (isUserTag(tag)) {
        reported = takeUnreported(dst);
      }
      if (reported.empty()) {
        header.seq = nextSeq_[dst]++;
        if (!mailbox_ && shortControlMessages_ && fitsStaging(header.payloadBytes)) {
          // The receiver posts its staging receive once the first such payload has
          // arrived the ordinary way (message.h); the ones after it go there.
          if (peerStages_[dst]) {
            header.kind = Kind::StagedData;
          }
          peerStages_[dst] = true;
        }
        if (!copiedInline) {
          auto& pending = pendingSends_[dst];
          std::erase_if(pending, [](const auto& entry) { return entry.second->isCompleted(); });
          pending[header.seq] = work;
        }
      }
    }
    if (reported.empty()) {
      try {
        transfer = post(dst, header, payload);
      } catch (...) {  // Gloo refuses at once a connection it already knows is closed
        {
          std::lock_guard<std::mutex> lock(mutex_);
          pendingSends_[dst].erase(header.seq);
        }
        throwCommError(work->name() + " on rank " + std::to_string(rank_) + ": rank " + std::to_string(dst) +
                       " is unreachable (it died, or closed the process group): " +
                       describeException(std::current_exception()));
      }
    }
  }
  if (!reported.empty()) {
    work->markFailed(reportingError(rank_, *work, reported));  // nothing was sent
  } else if (copiedInline || !transfer) {
    work->markSucceeded();
  } else {
    work->settleWith(transfer);
  }
  return work;
}

c10::intrusive_ptr<P2PWork> P2PEngine::recv(const at::Tensor& tensor, int src, int64_t tag) {
  const std::string from = src == -1 ? "any source" : "rank " + std::to_string(src);
  {
    // A dead peer's complete messages stay receivable (below); a closed pair's or a
    // failed group's do not.
    std::lock_guard<std::mutex> lock(mutex_);
    const auto& closed = src == -1 ? groupFailure_ : (groupFailure_.empty() ? pairClosed_[src] : groupFailure_);
    if (!closed.empty()) {
      throwCommError("recv from " + from + " on rank " + std::to_string(rank_) + ": " + closed);
    }
  }
  auto work = c10::make_intrusive<P2PWork>(
      rank_, src == -1 ? c10d::OpType::RECVANYSOURCE : c10d::OpType::RECV,
      "recv from " + from + tagText(tag), tensor, transport_.timeout(), src);
  if (src != -1) {
    closePairOnTimeout(*work, src);
    if (mailbox_) {
      work->readWhileWaiting([sink = timeoutSink_, src](P2PWork& waited, std::chrono::steady_clock::time_point deadline) {
        P2PEngine* engine = nullptr;
        {
          std::lock_guard<std::mutex> lock(sink->mutex);
          if (!sink->engine) {
            return;  // the group is gone
          }
          engine = sink->engine;
          ++sink->readers;
        }
        engine->readWhileWaiting(src, waited, deadline);
        std::lock_guard<std::mutex> lock(sink->mutex);
        if (--sink->readers == 0) {
          sink->noReaders.notify_all();
        }
      });
    }
  }

  std::vector<std::string> reported;
  std::shared_ptr<Inbound> arrived;
  std::string peerGone;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    QCCL_CHECK_VALUE(!stopping_, "recv on rank ", rank_, ": the process group was shut down");
    // In the same critical section as the matching: a rejection that arrives after this
    // finds the receive posted and fails it instead.
    if (isUserTag(tag)) {
      reported = takeUnreported(src);
    }
    if (reported.empty()) {
      arrived = matching_.postReceive({work, tensor, src, tag});
      // A peer that died or closed the group may have sent messages before: those that
      // arrived whole are still received (a worker's last report, say). Only a receive
      // that none of them serves fails.
      if (!arrived && src != -1 && !peerFailure_[src].empty()) {
        matching_.dropPeer(src);
        peerGone = peerFailure_[src];
      }
    }
  }
  if (!peerGone.empty()) {
    throwCommError("recv from " + from + " on rank " + std::to_string(rank_) + ": " + peerGone);
  }
  if (!reported.empty()) {
    work->markFailed(reportingError(rank_, *work, reported));  // it took no message
  } else if (arrived) {
    auto target = tensor;
    deliver(*arrived, *work, target);
  }
  return work;
}

// --- sending --------------------------------------------------------------------------------


void P2PEngine::sendRejection(const Inbound& message, const at::Tensor& tensor) {
  const auto reply = rejectionReply(config_, message.header, tensor);
  try {
    if (mailbox_) {  // never waits (mailbox.h)
      std::array<uint8_t, shm::Mailbox::kStatusBytes> record{};
      std::memcpy(record.data(), &reply, sizeof(Header));
      std::lock_guard<std::mutex> lock(statusMutex_);
      mailbox_->postStatus(message.src, record.data());
      return;
    }
    std::lock_guard<std::mutex> order(postMutex_);
    post(message.src, reply, at::Tensor());
  } catch (...) {
    // The sender is gone, so nobody is left to tell; its listener reports that.
  }
}

std::vector<std::string> P2PEngine::takeUnreported(int peer) {
  std::vector<std::string> taken;
  for (int p = 0; p < size_; ++p) {
    if (p == peer || peer == -1) {
      taken.insert(taken.end(), unreported_[p].begin(), unreported_[p].end());
      unreported_[p].clear();
    }
  }
  return taken;
}

c10::intrusive_ptr<WaitingWork> P2PEngine::post(int peer, const Header& header, const at::Tensor& payload) {
  std::vector<WorkPtr> parts;
  if (mailbox_) {  // the header, then the payload, however large
    auto written = outboxes_[peer]->post(header, payload);
    if (!written) {
      return nullptr;
    }
    parts.push_back(written);
  } else {
    postOverGloo(peer, header, payload, parts);
  }
  auto transfer = c10::make_intrusive<WaitingWork>(
      rank_, c10d::OpType::SEND, "transfer of a point-to-point message", std::move(parts), std::vector<at::Tensor>{},
      transport_.timeout());
  glooSends_.post(transfer);
  return transfer;
}

void P2PEngine::postOverGloo(int peer, const Header& header, const at::Tensor& payload, std::vector<WorkPtr>& parts) {
  std::vector<at::Tensor> head{controlMessage(header, payload, shortControlMessages_)};
  parts.push_back(transport_.gloo().send(head, peer, kControlSlot));
  const bool staged = header.kind == Kind::StagedData;
  if (staged || (header.kind == Kind::Data && !carriesInline(header))) {
    for (auto& part : payloadParts(payload)) {
      std::vector<at::Tensor> transfer{part};
      parts.push_back(transport_.gloo().send(transfer, peer, staged ? kStagedPayloadSlot : kPayloadSlot));
    }
  }
}

void P2PEngine::raiseIfBroken(int peer, const std::string& op) {
  std::string failure;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    failure = brokenFor(peer);
  }
  if (!failure.empty()) {
    throwCommError(op + " on rank " + std::to_string(rank_) + ": " + failure);
  }
}

const std::string& P2PEngine::brokenFor(int peer) const {
  if (!groupFailure_.empty()) {
    return groupFailure_;
  }
  return pairClosed_[peer].empty() ? peerFailure_[peer] : pairClosed_[peer];
}

// --- notices: a closed pair, a failed group ----------------------------------------------------

void P2PEngine::postNotice(int peer, Kind kind, const std::string& why) {
  const auto text = why.substr(0, static_cast<size_t>(kInlineBytes));
  auto payload = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  std::memcpy(payload.mutable_data_ptr(), text.data(), text.size());
  Header notice;
  notice.kind = kind;
  notice.dtype = static_cast<int64_t>(at::kByte);
  notice.numel = payload.numel();
  notice.payloadBytes = payload.numel();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || !peerFailure_[peer].empty()) {
      return;  // gone already: its own calls fail on their own
    }
    notice.seq = nextSeq_[peer]++;
  }
  try {
    post(peer, notice, payload);
  } catch (...) {
    // The same: the connection closed meanwhile.
  }
}

void P2PEngine::closePairOnTimeout(P2PWork& work, int peer) {
  work.onTimedOut([sink = timeoutSink_, peer](const std::string& why) {
    std::lock_guard<std::mutex> lock(sink->mutex);
    if (sink->engine) {
      sink->engine->closePair(peer, why, true);
    }
  });
}

void P2PEngine::closePair(int peer, const std::string& why, bool tellPeer) {
  const auto text = "the pair of ranks " + std::to_string(std::min(rank_, peer)) + " and " +
      std::to_string(std::max(rank_, peer)) + " was closed after a timeout (" + why +
      "): a message that came late would be taken by the wrong receive. Create a new group to go on "
      "with point-to-point between them";
  std::vector<c10::intrusive_ptr<P2PWork>> failed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || !pairClosed_[peer].empty()) {
      return;
    }
    pairClosed_[peer] = text;
    failed = takePending(peer, /*evenComplete=*/true);
  }
  failAll(failed, text);
  if (tellPeer) {
    std::lock_guard<std::mutex> order(postMutex_);
    postNotice(peer, Kind::PairClosed, why);
  }
}

void P2PEngine::tellPeersGroupFailed(const std::string& why) {
  std::lock_guard<std::mutex> order(postMutex_);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) {
      postNotice(peer, Kind::GroupFailed, why);
    }
  }
}

void P2PEngine::failGroup(const std::string& why) {
  std::vector<c10::intrusive_ptr<P2PWork>> failed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!groupFailure_.empty() || stopping_) {
      return;
    }
    groupFailure_ = why;
    failed = takePending(-1);
  }
  failAll(failed, why);
}

std::vector<c10::intrusive_ptr<P2PWork>> P2PEngine::takePending(int peer, bool evenComplete) {
  std::vector<c10::intrusive_ptr<P2PWork>> taken;
  for (int p = 0; p < size_; ++p) {
    if (p == peer || peer == -1) {
      for (auto& [seq, work] : pendingSends_[p]) {
        taken.push_back(work);
      }
      pendingSends_[p].clear();
    }
  }
  auto receives = peer == -1 ? matching_.clear() : matching_.dropPeer(peer, evenComplete);
  taken.insert(taken.end(), receives.begin(), receives.end());
  return taken;
}

void P2PEngine::failAll(const std::vector<c10::intrusive_ptr<P2PWork>>& works, const std::string& why) const {
  for (const auto& work : works) {
    work->markFailed(makeCommError(work->name() + " on rank " + std::to_string(rank_) + ": " + why));
  }
}

// --- shutdown -------------------------------------------------------------------------------

void P2PEngine::shutdown(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(timeoutSink_->mutex);
    timeoutSink_->engine = nullptr;
  }
  std::vector<WorkPtr> waits;
  std::vector<c10::intrusive_ptr<P2PWork>> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    for (auto& wait : listenerWaits_) {
      if (wait) {
        waits.push_back(wait);
      }
    }
    abandoned = takePending(-1);
  }
  for (auto& wait : waits) {
    wait->abort();
  }
  if (mailbox_) {
    mailbox_->abort();  // the listeners', the outboxes' and the reading waiters' waits end
    for (auto& outbox : outboxes_) {
      if (outbox) {
        outbox->stop();
      }
    }
    std::unique_lock<std::mutex> lock(timeoutSink_->mutex);
    timeoutSink_->noReaders.wait(lock, [this] { return timeoutSink_->readers == 0; });
  }
  for (auto& listener : listeners_) {
    if (listener.joinable()) {
      listener.join();
    }
  }
  listeners_.clear();
  failAll(abandoned, why);
  glooSends_.abortAll();
}

} // namespace qccl::p2p
