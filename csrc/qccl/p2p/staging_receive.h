#pragma once

// The receive a listener keeps posted on kStagedPayloadSlot for one peer, so that a
// payload of up to kStagingBytes needs no handshake (message.h). It is posted after the
// first such payload from that peer has arrived the ordinary way, which both sides see
// in the same message stream, so the sender knows when it may use it without being
// told. Only the listener of that peer touches it.

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

namespace qccl::p2p {

class StagingReceive {
 public:
  bool posted() const {
    return bodyWork_.defined();
  }
  // Posts the body and tail receives, again once a payload has been taken.
  void post(c10d::Backend& gloo, int peer);
  // The Gloo receives of the next payload; wait on the tail first (message.h: why).
  const c10::intrusive_ptr<c10d::Work>& tail() const {
    return tailWork_;
  }
  const c10::intrusive_ptr<c10d::Work>& body() const {
    return bodyWork_;
  }
  // Copies the payload that arrived, payload.numel() bytes, into `payload`.
  void copyTo(at::Tensor& payload) const;

 private:
  at::Tensor body_;
  at::Tensor tail_;
  c10::intrusive_ptr<c10d::Work> bodyWork_;
  c10::intrusive_ptr<c10d::Work> tailWork_;
};

} // namespace qccl::p2p
