#include "qccl/p2p/message.h"

#include <cstdlib>
#include <string>

#include <ATen/ops/empty.h>

namespace qccl::p2p {

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

// Only the bytes in use travel when the transport allows it: a 1 KiB message then stays
// within two TCP segments, which a connection that was idle sends at once, where a third
// waits for TCP's pacing (about a millisecond at 20 ms of round trip).
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

std::vector<at::Tensor> payloadParts(const at::Tensor& payload) {
  const int64_t body = payload.numel() - kTailBytes;
  return {payload.narrow(0, 0, body), payload.narrow(0, body, kTailBytes)};
}

} // namespace qccl::p2p
