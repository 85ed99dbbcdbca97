#include "qccl/p2p/staging_receive.h"

#include <ATen/ATen.h>

#include "qccl/p2p/message.h"

namespace qccl::p2p {

void StagingReceive::post(c10d::Backend& gloo, int peer) {
  if (!body_.defined()) {
    body_ = at::empty({kStagingBytes - kTailBytes}, at::kByte);
    tail_ = at::empty({kTailBytes}, at::kByte);
  }
  // The sender's body is usually shorter than this receive: Gloo's tcp transport, the
  // only one the staged route is used on, reads it (message.h).
  std::vector<at::Tensor> body{body_};
  std::vector<at::Tensor> tail{tail_};
  bodyWork_ = gloo.recv(body, peer, kStagedPayloadSlot);
  tailWork_ = gloo.recv(tail, peer, kStagedPayloadSlot);
}

void StagingReceive::copyTo(at::Tensor& payload) const {
  const int64_t body = payload.numel() - kTailBytes;
  payload.narrow(0, 0, body).copy_(body_.narrow(0, 0, body));
  payload.narrow(0, body, kTailBytes).copy_(tail_);
}

} // namespace qccl::p2p
