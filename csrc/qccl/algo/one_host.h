#pragma once

// Every exact collective among the ranks of a group that share a host, through shared
// memory (transport/shm/channel.h) instead of Gloo's sockets (issue 28).
//
// Each collective is a run of the channel's rounds: every rank offers the bytes it
// contributes (the same number on every rank, or none on ranks that contribute nothing,
// such as a broadcast's non-roots), cut into rounds of at most one slot; in each round
// every rank reads the contributing peers' chunks straight from their segments. Data
// moves once: from the caller's tensor into this rank's slot, and from the peers' slots
// into the caller's output.
//
// Reductions follow the order Gloo's ring would (algo/gloo_ring_order.h), so every rank
// computes the same bits, the same from run to run, and Gloo's bits at any world size.
// Below 1 MiB, or at two ranks, they are one-shot: every rank reduces every contribution
// itself. Above, among more ranks, each rank reduces one share of each chunk and the
// ranks then gather the shares (a reduce-scatter and an all-gather through the slots),
// spreading the memory traffic over the ranks.
//
// Runs on the group's worker thread (one call at a time, in the group's order, which
// every rank shares: the channel's rounds stay in step). Failures raise DistBackendError.
//
// It is a Transport too (one_host_backend.h): the compressed algorithms run over it as
// they run over Gloo, their encoded bytes through shared memory.

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/algo/one_host_backend.h"
#include "qccl/algo/reduce_lowering.h"
#include "qccl/transport/shm/channel.h"
#include "qccl/transport/transport.h"

namespace qccl::algo {

class OneHost : public Transport {
 public:
  explicit OneHost(std::unique_ptr<shm::Channel> channel);

  int rank() const override {
    return channel_->rank();
  }
  int size() const override {
    return channel_->size();
  }
  // Transport: its Works are done when returned, so a wait has nothing to wait for.
  c10d::Backend& backend() override {
    return *backend_;
  }
  void waitFor(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) override {}

  void allreduce(at::Tensor& tensor, const c10d::ReduceOp& op);
  // The same on a contiguous tensor already in its lowering's wire dtype (`wireOp`), in
  // place: what a fused all_reduce_coalesced reduces.
  void allreduceWire(at::Tensor& wire, c10d::ReduceOp::RedOpType wireOp, const char* what);
  // Leaves `tensor` unchanged on every rank but the root.
  void reduce(at::Tensor& tensor, const c10d::ReduceOp& op, int64_t root);
  void broadcast(at::Tensor& tensor, int64_t root);
  // `output` holds size() blocks of `input`'s bytes, in rank order.
  void allgatherIntoTensor(at::Tensor& output, const at::Tensor& input);
  void reduceScatterTensor(at::Tensor& output, const at::Tensor& input, const c10d::ReduceOp& op);
  // `outputs` (one per rank, like `input`) are used on the root only.
  void gather(std::vector<at::Tensor>& outputs, const at::Tensor& input, int64_t root);
  // `inputs` (one per rank, like `output`) are used on the root only.
  void scatter(at::Tensor& output, const std::vector<at::Tensor>& inputs, int64_t root);
  // Byte tensors, contiguous: `input` holds sendBytes[r] bytes for each rank r in rank
  // order, `output` receives recvBytes[r] bytes from each. Ranks may send different totals;
  // a rank whose sizes disagree with a peer's makes every rank raise ValueError.
  void allToAll(at::Tensor& output, const std::vector<int64_t>& recvBytes, const at::Tensor& input,
                const std::vector<int64_t>& sendBytes);
  void barrier();
  // Every rank's `mine` (the same size on every rank), in rank order: the cross-rank
  // check's exchange (backend/check_exchange.h). Adds to (*waitedNs)[r], if given, the
  // nanoseconds it was blocked on rank r (backend/peer_waits.h).
  at::Tensor exchange(const at::Tensor& mine, const std::string& what, std::vector<int64_t>* waitedNs = nullptr);

  // Every wait, now or later, raises at once (any thread).
  void abort(const std::string& why);
  void setTimeout(std::chrono::milliseconds timeout);
  uint64_t bytesPublished() const {
    return channel_->bytesPublished();
  }

 private:
  // One round's chunk: `length` bytes from byte `offset` of each rank's contribution,
  // at fromRank[r] (null for a rank that contributes nothing).
  using Take = std::function<void(int64_t offset, const std::vector<const uint8_t*>& fromRank, int64_t length)>;
  // Runs the rounds of collective `what`: `bytes` per contributing rank
  // (`contributes(r)`), this rank's from `mine`; `take` sees each round's chunks. A
  // failure raises DistBackendError naming `what`.
  void rounds(
      const char* what,
      int64_t bytes,
      const uint8_t* mine,
      const std::function<bool(int)>& contributes,
      const Take& take);
  // The same where contributions differ in length: rounds cover `span` bytes (the longest
  // contribution, the same on every rank) and this rank offers its `myBytes`; a peer's
  // chunk holds only what is left of its own contribution, which `take` must know.
  void unevenRounds(const char* what, int64_t span, const uint8_t* mine, int64_t myBytes, const Take& take);
  // Runs `body`, naming `what` in the DistBackendError it raises.
  void named(const char* what, const std::function<void()>& body);
  // allreduceWire's reduce-scatter + all-gather: two rounds per chunk.
  void allreduceSpread(at::Tensor& wire, c10d::ReduceOp::RedOpType wireOp, int64_t chunkElements, const char* what);
  void runRounds(
      int64_t span,
      const uint8_t* mine,
      int64_t myBytes,
      const std::function<bool(int)>& contributes,
      const Take& take);

  std::unique_ptr<shm::Channel> channel_;
  c10::intrusive_ptr<OneHostBackend> backend_;
  int64_t chunkBytes_;  // a slot, rounded down so that a chunk never splits an element
  uint64_t round_ = 0;  // the last round this rank ran
};

} // namespace qccl::algo
