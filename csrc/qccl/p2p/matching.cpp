#include "qccl/p2p/matching.h"

#include <algorithm>

namespace qccl::p2p {
namespace {

bool matches(int postedSrc, int64_t postedTag, int src, int64_t tag) {
  return (postedSrc == -1 || postedSrc == src) && postedTag == tag;
}

} // namespace

std::shared_ptr<InboundMessage> Matching::postReceive(const PostedReceive& receive) {
  auto it = std::find_if(inbound_.begin(), inbound_.end(), [&](const auto& message) {
    return !message->receiver && matches(receive.src, receive.tag, message->src, message->header.tag);
  });
  if (it == inbound_.end()) {
    posted_.push_back(receive);
    return nullptr;
  }
  if (!(*it)->arrived) {  // the listener delivers it once the payload is in
    (*it)->receiver = receive.work;
    (*it)->receiveTensor = receive.tensor;
    return nullptr;
  }
  auto message = *it;
  inbound_.erase(it);
  return message;
}

std::shared_ptr<InboundMessage> Matching::messageArriving(int src, const Header& header) {
  auto message = std::make_shared<InboundMessage>();
  message->src = src;
  message->header = header;
  posted_.remove_if([](const PostedReceive& receive) { return receive.work->isCompleted(); });  // timed out
  auto it = std::find_if(posted_.begin(), posted_.end(), [&](const PostedReceive& receive) {
    return matches(receive.src, receive.tag, src, header.tag);
  });
  if (it != posted_.end()) {
    message->receiver = it->work;
    message->receiveTensor = it->tensor;
    posted_.erase(it);
  }
  inbound_.push_back(message);
  return message;
}

bool Matching::messageArrived(const std::shared_ptr<InboundMessage>& message) {
  message->arrived = true;
  if (!message->receiver) {
    return false;
  }
  inbound_.remove(message);
  return true;
}

c10::intrusive_ptr<P2PWork> Matching::withdrawReporter(int peer) {
  auto it = std::find_if(posted_.begin(), posted_.end(), [&](const PostedReceive& receive) {
    return (receive.src == peer || receive.src == -1) && isUserTag(receive.tag) && !receive.work->isCompleted();
  });
  if (it == posted_.end()) {
    return nullptr;
  }
  auto work = it->work;
  posted_.erase(it);
  return work;
}

std::vector<c10::intrusive_ptr<P2PWork>> Matching::dropPeer(int peer, bool evenComplete) {
  std::vector<c10::intrusive_ptr<P2PWork>> dropped;
  for (auto it = posted_.begin(); it != posted_.end();) {
    if (it->src == peer) {
      dropped.push_back(it->work);
      it = posted_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = inbound_.begin(); it != inbound_.end();) {
    if ((*it)->src != peer || ((*it)->arrived && !evenComplete)) {
      ++it;
      continue;
    }
    if ((*it)->receiver) {
      dropped.push_back((*it)->receiver);
    }
    it = inbound_.erase(it);
  }
  return dropped;
}

std::vector<c10::intrusive_ptr<P2PWork>> Matching::clear() {
  std::vector<c10::intrusive_ptr<P2PWork>> dropped;
  for (auto& receive : posted_) {
    dropped.push_back(receive.work);
  }
  for (auto& message : inbound_) {
    if (message->receiver) {
      dropped.push_back(message->receiver);
    }
  }
  posted_.clear();
  inbound_.clear();
  return dropped;
}

} // namespace qccl::p2p
