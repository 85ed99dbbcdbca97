#pragma once

// Point-to-point through an inner backend that matches sends with receives itself: the
// group's NCCL backend, for CUDA tensors (docs/p2p.md, "Over NCCL"). NCCL has no room
// for the header of qccl's own protocol (p2p_engine.h), so:
//   - a compressed payload (QCCL_P2P_CODEC) is encoded on the caller's stream and sent as
//     bytes; the receive takes the bytes, and its DecodingWork decodes them;
//   - sender and receiver cannot compare codecs per message. Each rank publishes its p2p
//     settings in the group's store when the group is created and compares them with a
//     peer's before its first send or receive with that peer: a disagreement raises
//     ValueError instead of letting NCCL pair buffers of different sizes (which hangs
//     or reads garbage);
//   - as with NCCL, sender and receiver must pass tensors of the same dtype and size.

#include <mutex>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "qccl/common/config.h"
#include "qccl/p2p/decoding_work.h"

namespace qccl::p2p {

class InnerBackendP2P {
 public:
  // Publishes this rank's settings in `store`; with no store, nothing is compared. A
  // group without an inner backend (`hasInner` false) only publishes, so that a peer
  // that has one learns at once that this rank will not answer through it.
  InnerBackendP2P(const Config& config, int rank, c10::intrusive_ptr<c10d::Store> store, bool hasInner);

  c10::intrusive_ptr<c10d::Work> send(c10d::Backend& inner, const at::Tensor& tensor, int dst, int64_t tag);
  // Inside a coalescing window the inner backend returns no Work per op: a compressed
  // receive then waits for batchEnded() to learn which Work carries its bytes.
  c10::intrusive_ptr<c10d::Work> recv(c10d::Backend& inner, const at::Tensor& tensor, int src, int64_t tag);
  // The inner backend's Work for the batch of the coalescing window that just ended;
  // null when ending it failed or gave none (the batch's receives then fail).
  void batchEnded(const c10::intrusive_ptr<c10d::Work>& batch);

 private:
  // Raises ValueError, naming both settings, when `peer` published other p2p settings.
  void checkAgreement(int peer, const std::string& op);

  const Config config_;
  const int rank_;
  const c10::intrusive_ptr<c10d::Store> store_;
  const std::string settings_;  // this rank's, as published

  std::mutex mutex_;  // everything below
  std::vector<int> agreedPeers_;
  std::vector<c10::intrusive_ptr<DecodingWork>> awaitingBatch_;
  std::vector<at::Tensor> sentInBatch_;  // encoded payloads of the open batch
};

} // namespace qccl::p2p
