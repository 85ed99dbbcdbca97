#include "qccl/p2p/p2p_engine.h"

#include <algorithm>
#include <cstdlib>
#include <deque>

#include <ATen/ATen.h>
#include <c10/core/ScalarType.h>

#include "qccl/p2p/waiting_work.h"
#include "qccl/common/errors.h"
#include "qccl/common/tensor_bytes.h"
#include "qccl/p2p/payload_codec.h"

namespace qccl::p2p {
namespace {

using WorkPtr = c10::intrusive_ptr<c10d::Work>;

// A listener waits for the next message from its peer for as long as the group lives;
// Gloo turns any timed-out wait into an error on every connection of the group, so this
// wait has no practical limit. shutdown() cuts it short.
constexpr auto kListenForever = std::chrono::hours(24 * 365);

// Whether Gloo's transport takes a message shorter than the receive posted for it. Its tcp
// transport (Linux's default, and TCP_TLS, which reads the same way) does: the message
// says its length and the receive only has to be large enough (gloo/transport/tcp/pair.cc).
// Its uv transport (macOS, Windows, GLOO_DEVICE_TRANSPORT=UV) reads the posted length.
// Torch picks the transport from GLOO_DEVICE_TRANSPORT, else by platform, and both ends
// of a connection use the same one.
bool transportReadsShortMessages() {
#ifdef __linux__
  const char* transport = std::getenv("GLOO_DEVICE_TRANSPORT");
  if (transport == nullptr) {
    return true;
  }
  const std::string name(transport);
  return name == "TCP" || name == "TCP_TLS" || name == "LINUX";
#else
  return false;
#endif
}

// The control message: the header, then the payload when it travels inline. Only the
// bytes in use travel when the transport allows it: a 1 KiB message then stays within two
// TCP segments, which a connection that was idle sends at once, where a third waits for
// TCP's pacing (about a millisecond at 20 ms of round trip).
at::Tensor controlMessage(const Header& header, const at::Tensor& payload, bool shortMessage) {
  const int64_t used = static_cast<int64_t>(sizeof(Header)) + (carriesInline(header) ? header.payloadBytes : 0);
  auto bytes = at::empty({shortMessage ? used : kControlBytes}, at::kByte);
  auto* out = static_cast<uint8_t*>(bytes.mutable_data_ptr());
  std::memcpy(out, &header, sizeof(Header));
  if (carriesInline(header) && header.payloadBytes > 0) {
    std::memcpy(out + sizeof(Header), payload.const_data_ptr(), header.payloadBytes);
  }
  return bytes;
}

// A large payload's two transfers (message.h explains why there are two).
std::vector<at::Tensor> payloadParts(const at::Tensor& payload) {
  const int64_t body = payload.numel() - kTailBytes;
  return {payload.narrow(0, 0, body), payload.narrow(0, body, kTailBytes)};
}

std::string tagText(int64_t tag) {
  return " (tag " + std::to_string(tag) + ")";
}

constexpr const char* kMustAgree = "; sender and receiver must agree on dtype, size and QCCL_P2P_CODEC";

} // namespace

P2PEngine::P2PEngine(GlooTransport& transport, const Config& config, int rank, int size)
    : transport_(transport),
      config_(config),
      rank_(rank),
      size_(size),
      shortControlMessages_(transportReadsShortMessages()),
      listenerWaits_(size),
      peerFailure_(size),
      unreported_(size),
      nextSeq_(size, 0),
      peerStages_(size, false),
      pendingSends_(size) {
  // From the start: a peer's first message must find this rank listening even if this
  // rank's own first call on the group comes after that peer waits for it.
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) {
      listeners_.emplace_back([this, peer] { listen(peer); });
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
        if (shortControlMessages_ && fitsStaging(header.payloadBytes)) {
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
    work->markFailed(reportingError(*work, reported));  // nothing was sent
  } else if (copiedInline) {
    work->markSucceeded();
  } else {
    work->settleWith(transfer);
  }
  return work;
}

c10::intrusive_ptr<P2PWork> P2PEngine::recv(const at::Tensor& tensor, int src, int64_t tag) {
  const std::string from = src == -1 ? "any source" : "rank " + std::to_string(src);
  if (src != -1) {
    raiseIfBroken(src, "recv from " + from);
  }
  auto work = c10::make_intrusive<P2PWork>(
      rank_, src == -1 ? c10d::OpType::RECVANYSOURCE : c10d::OpType::RECV,
      "recv from " + from + tagText(tag), tensor, transport_.timeout(), src);

  std::vector<std::string> reported;
  std::shared_ptr<Inbound> arrived;
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
    }
  }
  if (!reported.empty()) {
    work->markFailed(reportingError(*work, reported));  // it took no message
  } else if (arrived) {
    auto target = tensor;
    deliver(*arrived, *work, target);
  }
  return work;
}

// --- listening ------------------------------------------------------------------------------

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
        onData(peer, header, next.bytes, staging);
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

void P2PEngine::onData(int peer, const Header& header, const at::Tensor& control, StagingReceive& staging) {
  std::shared_ptr<Inbound> message;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    message = matching_.messageArriving(peer, header);
  }
  // Straight into the receive's tensor when nothing needs checking or decoding later.
  message->intoReceiveTensor = message->receiver && header.codec == static_cast<int64_t>(CodecKind::None) &&
      mismatch(header, message->receiveTensor).empty();
  message->payload = message->intoReceiveTensor ? asBytes(message->receiveTensor)
                                                : at::empty({header.payloadBytes}, at::kByte);
  if (carriesInline(header)) {  // copied out: the control buffer takes the next message
    message->payload.copy_(control.narrow(0, sizeof(Header), header.payloadBytes));
  } else {
    receivePayload(peer, header, message->payload, staging);
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
  const auto text = rejectionText(peer, status);
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
    if (receiver->markFailed(reportingError(*receiver, {text}))) {
      return;
    }
    // It timed out meanwhile (and raised that): the next candidate reports it.
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
    for (auto& [seq, work] : pendingSends_[peer]) {
      failed.push_back(work);
    }
    pendingSends_[peer].clear();
    auto receives = matching_.dropPeer(peer);
    failed.insert(failed.end(), receives.begin(), receives.end());
  }
  for (auto& work : failed) {
    work->markFailed(makeCommError(work->name() + " on rank " + std::to_string(rank_) + " failed: " + message));
  }
}

// --- delivery ------------------------------------------------------------------

std::string P2PEngine::describeMessage(int64_t dtype, int64_t numel, int64_t codec) const {
  return std::to_string(numel) + " elements of " +
      std::string(c10::getDtypeNames(static_cast<c10::ScalarType>(dtype)).first) + " (codec " +
      std::string(codecName(static_cast<CodecKind>(codec))) + ")";
}

std::string P2PEngine::rejectionText(int peer, const Header& status) const {
  return "send to rank " + std::to_string(peer) + tagText(status.tag) + " on rank " + std::to_string(rank_) +
      " (message #" + std::to_string(status.seq) + ") was rejected: it carried " +
      describeMessage(status.dtype, status.numel, status.codec) + " but rank " + std::to_string(peer) +
      " posted a receive for " + describeMessage(status.expectedDtype, status.expectedNumel, status.expectedCodec);
}

std::string P2PEngine::mismatch(const Header& message, const at::Tensor& tensor) const {
  const auto expectedCodec = payloadCodec(config_, tensor);
  const bool fits = message.dtype == static_cast<int64_t>(tensor.scalar_type()) &&
      message.numel == tensor.numel() && message.codec == static_cast<int64_t>(expectedCodec) &&
      (expectedCodec == CodecKind::None || message.block == config_.block);
  if (fits) {
    return "";
  }
  return "the message carries " + describeMessage(message.dtype, message.numel, message.codec) +
      " (block " + std::to_string(message.block) + ") but the receive was posted for " +
      describeMessage(static_cast<int64_t>(tensor.scalar_type()), tensor.numel(), static_cast<int64_t>(expectedCodec)) +
      " (block " + std::to_string(config_.block) + ")" + kMustAgree;
}

void P2PEngine::deliver(Inbound& message, P2PWork& receiver, at::Tensor& tensor) {
  const auto problem = mismatch(message.header, tensor);
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

// --- sending --------------------------------------------------------------------------------

Header P2PEngine::rejectionReply(const Header& message, const at::Tensor& tensor) const {
  Header reply = message;
  reply.kind = Kind::Rejected;
  reply.payloadBytes = 0;
  reply.expectedDtype = static_cast<int64_t>(tensor.scalar_type());
  reply.expectedNumel = tensor.numel();
  reply.expectedCodec = static_cast<int64_t>(payloadCodec(config_, tensor));
  return reply;
}

void P2PEngine::sendRejection(const Inbound& message, const at::Tensor& tensor) {
  std::lock_guard<std::mutex> order(postMutex_);
  try {
    post(message.src, rejectionReply(message.header, tensor), at::Tensor());
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

std::exception_ptr P2PEngine::reportingError(const P2PWork& work, const std::vector<std::string>& rejections) const {
  std::string texts;
  for (const auto& text : rejections) {
    texts += (texts.empty() ? "" : "; ") + text;
  }
  const bool isSend = work.retrieveOpType() == c10d::OpType::SEND;
  return std::make_exception_ptr(c10::ValueError(
      {__func__, __FILE__, __LINE__},
      "qccl: " + work.name() + " on rank " + std::to_string(rank_) +
          " did nothing: it reports that an earlier message was rejected (" + texts + ")" + kMustAgree +
          (isSend ? ". Nothing of this message was sent: send it again if the receiver expects it"
                  : ". This receive took no message: receive again for the next one")));
}

c10::intrusive_ptr<WaitingWork> P2PEngine::post(int peer, const Header& header, const at::Tensor& payload) {
  std::vector<WorkPtr> parts;
  std::vector<at::Tensor> head{controlMessage(header, payload, shortControlMessages_)};
  parts.push_back(transport_.gloo().send(head, peer, kControlSlot));
  const bool staged = header.kind == Kind::StagedData;
  if (staged || (header.kind == Kind::Data && !carriesInline(header))) {
    for (auto& part : payloadParts(payload)) {
      std::vector<at::Tensor> transfer{part};
      parts.push_back(transport_.gloo().send(transfer, peer, staged ? kStagedPayloadSlot : kPayloadSlot));
    }
  }
  auto transfer = c10::make_intrusive<WaitingWork>(
      rank_, c10d::OpType::SEND, "qccl point-to-point transfer", std::move(parts), std::vector<at::Tensor>{},
      transport_.timeout());
  glooSends_.post(transfer);
  return transfer;
}

void P2PEngine::raiseIfBroken(int peer, const std::string& op) {
  std::string failure;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    failure = peerFailure_[peer];
  }
  if (!failure.empty()) {
    throwCommError(op + " on rank " + std::to_string(rank_) + ": " + failure);
  }
}

// --- shutdown -------------------------------------------------------------------------------

void P2PEngine::shutdown(const std::string& why) {
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
    for (auto& pending : pendingSends_) {
      for (auto& [seq, work] : pending) {
        abandoned.push_back(work);
      }
      pending.clear();
    }
    auto receives = matching_.clear();
    abandoned.insert(abandoned.end(), receives.begin(), receives.end());
  }
  for (auto& wait : waits) {
    wait->abort();
  }
  for (auto& listener : listeners_) {
    if (listener.joinable()) {
      listener.join();
    }
  }
  listeners_.clear();
  for (auto& work : abandoned) {
    work->markFailed(makeCommError(work->name() + " on rank " + std::to_string(rank_) + ": " + why));
  }
  glooSends_.abortAll();
}

} // namespace qccl::p2p
