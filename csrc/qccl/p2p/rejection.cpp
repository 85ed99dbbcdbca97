#include "qccl/p2p/rejection.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "qccl/p2p/payload_codec.h"

namespace qccl::p2p {

const char* const kMustAgree = "; sender and receiver must agree on dtype, size and QCCL_P2P_CODEC";

std::string tagText(int64_t tag) {
  return " (tag " + std::to_string(tag) + ")";
}

std::string describeMessage(int64_t dtype, int64_t numel, int64_t codec) {
  return std::to_string(numel) + " elements of " +
      std::string(c10::getDtypeNames(static_cast<c10::ScalarType>(dtype)).first) + " (codec " +
      std::string(codecName(static_cast<CodecKind>(codec))) + ")";
}

std::string rejectionText(int rank, int peer, const Header& status) {
  return "send to rank " + std::to_string(peer) + tagText(status.tag) + " on rank " + std::to_string(rank) +
      " (message #" + std::to_string(status.seq) + ") was rejected: it carried " +
      describeMessage(status.dtype, status.numel, status.codec) + " but rank " + std::to_string(peer) +
      " posted a receive for " + describeMessage(status.expectedDtype, status.expectedNumel, status.expectedCodec);
}

std::string mismatch(const Config& config, const Header& message, const at::Tensor& tensor) {
  const auto expectedCodec = payloadCodec(config, tensor);
  const bool fits = message.dtype == static_cast<int64_t>(tensor.scalar_type()) &&
      message.numel == tensor.numel() && message.codec == static_cast<int64_t>(expectedCodec) &&
      (expectedCodec == CodecKind::None || message.block == config.block);
  if (fits) {
    return "";
  }
  return "the message carries " + describeMessage(message.dtype, message.numel, message.codec) +
      " (block " + std::to_string(message.block) + ") but the receive was posted for " +
      describeMessage(static_cast<int64_t>(tensor.scalar_type()), tensor.numel(), static_cast<int64_t>(expectedCodec)) +
      " (block " + std::to_string(config.block) + ")" + kMustAgree;
}

Header rejectionReply(const Config& config, const Header& message, const at::Tensor& tensor) {
  Header reply = message;
  reply.kind = Kind::Rejected;
  reply.payloadBytes = 0;
  reply.expectedDtype = static_cast<int64_t>(tensor.scalar_type());
  reply.expectedNumel = tensor.numel();
  reply.expectedCodec = static_cast<int64_t>(payloadCodec(config, tensor));
  return reply;
}

std::exception_ptr reportingError(int rank, const P2PWork& work, const std::vector<std::string>& rejections) {
  std::string texts;
  for (const auto& text : rejections) {
    texts += (texts.empty() ? "" : "; ") + text;
  }
  const bool isSend = work.retrieveOpType() == c10d::OpType::SEND;
  return std::make_exception_ptr(c10::ValueError(
      {__func__, __FILE__, __LINE__},
      "qccl: " + work.name() + " on rank " + std::to_string(rank) +
          " did nothing: it reports that an earlier message was rejected (" + texts + ")" + kMustAgree +
          (isSend ? ". Nothing of this message was sent: send it again if the receiver expects it"
                  : ". This receive took no message: receive again for the next one")));
}

} // namespace qccl::p2p
