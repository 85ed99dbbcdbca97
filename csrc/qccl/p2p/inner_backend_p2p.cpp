#include "qccl/p2p/inner_backend_p2p.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "qccl/codec/codec.h"
#include "qccl/common/errors.h"
#include "qccl/p2p/payload_codec.h"

namespace qccl::p2p {
namespace {

// Under the store the group was given: qccl's creators give it one whose prefix is
// this creation's own (transport/fresh_prefix.h).
std::string settingsKey(int rank) {
  return "p2p_settings/" + std::to_string(rank);
}

// What must agree between sender and receiver: the route of CUDA tensors, and through
// NCCL the codec and its block. A peer on another route would never post the matching
// NCCL call, so that difference is reported too, at once instead of at the timeout.
std::string describeSettings(const Config& config, bool hasInner) {
  if (config.cudaTransport == Config::CudaTransport::StagedThroughHost) {
    return "QCCL_CUDA_TRANSPORT=gloo";
  }
  if (!hasInner) {
    return "QCCL_CUDA_TRANSPORT=nccl without NCCL (no GPU or no NCCL when the group was created)";
  }
  std::string text = "QCCL_CUDA_TRANSPORT=nccl QCCL_P2P_CODEC=" + std::string(codecName(config.p2pCodec));
  if (config.p2pCodec != CodecKind::None) {
    text += " QCCL_BLOCK=" + std::to_string(config.block);
  }
  return text;
}

} // namespace

InnerBackendP2P::InnerBackendP2P(
    const Config& config, int rank, c10::intrusive_ptr<c10d::Store> store, bool hasInner)
    : config_(config), rank_(rank), store_(std::move(store)), settings_(describeSettings(config, hasInner)) {
  if (store_) {
    store_->set(settingsKey(rank_), std::vector<uint8_t>(settings_.begin(), settings_.end()));
  }
}

void InnerBackendP2P::checkAgreement(int peer, const std::string& op) {
  if (!store_ || peer == rank_) {
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (std::find(agreedPeers_.begin(), agreedPeers_.end(), peer) != agreedPeers_.end()) {
      return;
    }
  }
  const auto bytes = store_->get(settingsKey(peer));  // published when the peer created the group
  const std::string theirs(bytes.begin(), bytes.end());
  QCCL_CHECK_VALUE(
      theirs == settings_, op, " on rank ", rank_, ": this rank has ", settings_, " but rank ", peer, " has ",
      theirs, "; point-to-point over NCCL carries no header to tell them apart, so sender and receiver must agree");
  std::lock_guard<std::mutex> lock(mutex_);
  agreedPeers_.push_back(peer);
}

c10::intrusive_ptr<c10d::Work> InnerBackendP2P::send(
    c10d::Backend& inner, const at::Tensor& tensor, int dst, int64_t tag) {
  checkAgreement(dst, "send to rank " + std::to_string(dst));
  const auto codec = payloadCodec(config_, tensor);
  if (codec == CodecKind::None) {
    std::vector<at::Tensor> bytes{tensor};
    return inner.send(bytes, dst, static_cast<int>(tag));
  }
  std::vector<at::Tensor> bytes{encodePayload(tensor, codec, config_.block)};
  auto work = inner.send(bytes, dst, static_cast<int>(tag));
  if (!work) {
    // In a batch NCCL enqueues the transfer only when the batch ends, and holds no
    // reference to the bytes: freed now, their memory could take the next encode.
    std::lock_guard<std::mutex> lock(mutex_);
    sentInBatch_.push_back(bytes[0]);
  }
  return work;
}

c10::intrusive_ptr<c10d::Work> InnerBackendP2P::recv(
    c10d::Backend& inner, const at::Tensor& tensor, int src, int64_t tag) {
  const std::string name = "recv from rank " + std::to_string(src);
  checkAgreement(src, name);
  const auto codec = payloadCodec(config_, tensor);
  if (codec == CodecKind::None) {
    std::vector<at::Tensor> into{tensor};
    return inner.recv(into, src, static_cast<int>(tag));
  }
  const int64_t bytes = codec::makeCodec(codec, config_.block)->encodedBytes(tensor.numel());
  auto payload = at::empty({bytes}, tensor.options().dtype(at::kByte));
  std::vector<at::Tensor> into{payload};
  auto transfer = inner.recv(into, src, static_cast<int>(tag));
  const bool inWindow = !transfer;
  auto work = c10::make_intrusive<DecodingWork>(
      rank_, name, tensor, std::move(payload), codec, config_.block, src, std::move(transfer));
  if (inWindow) {
    std::lock_guard<std::mutex> lock(mutex_);
    awaitingBatch_.push_back(work);
  }
  return work;
}

void InnerBackendP2P::batchEnded(const c10::intrusive_ptr<c10d::Work>& batch) {
  std::vector<c10::intrusive_ptr<DecodingWork>> waiting;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    waiting.swap(awaitingBatch_);
    sentInBatch_.clear();  // enqueued now: the allocator orders their reuse after the transfer
  }
  for (auto& work : waiting) {
    if (batch) {
      work->setTransfer(batch);
    } else {
      work->markFailed(makeCommError(
          "qccl: " + work->name() + " on rank " + std::to_string(rank_) +
          ": its batch ended without a Work to wait on (ending it failed, or a synchronous collective in the "
          "same batch made NCCL return none)"));
    }
  }
}

} // namespace qccl::p2p
