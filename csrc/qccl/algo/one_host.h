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
// Reductions are one-shot: every rank reduces every contribution itself, in rank order
// (rank 0's, then 1's, ...), so every rank computes the same bits, and the same bits from
// run to run. At 2 ranks that is Gloo's result to the bit (a + b == b + a); at more ranks
// floating-point sums may differ from Gloo's ring order in the last bits (docs/algorithms.md).
//
// Runs on the group's worker thread (one call at a time, in the group's order, which
// every rank shares: the channel's rounds stay in step). Failures raise DistBackendError.

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "qccl/transport/shm/channel.h"

namespace qccl::algo {

class OneHost {
 public:
  explicit OneHost(std::unique_ptr<shm::Channel> channel);

  int rank() const {
    return channel_->rank();
  }
  int size() const {
    return channel_->size();
  }

  void allreduce(at::Tensor& tensor, const c10d::ReduceOp& op);
  // Leaves `tensor` unchanged on every rank but the root.
  void reduce(at::Tensor& tensor, const c10d::ReduceOp& op, int64_t root);
  void broadcast(at::Tensor& tensor, int64_t root);
  // `output` holds size() blocks of `input`'s bytes, in rank order.
  void allgatherIntoTensor(at::Tensor& output, const at::Tensor& input);
  void reduceScatterTensor(at::Tensor& output, const at::Tensor& input, const c10d::ReduceOp& op);
  void barrier();
  // Every rank's `mine` (the same size on every rank), in rank order: the cross-rank
  // check's exchange (backend/check_exchange.h).
  at::Tensor exchange(const at::Tensor& mine, const std::string& what);

  // Every wait, now or later, raises at once (any thread).
  void abort();
  void setTimeout(std::chrono::milliseconds timeout);
  uint64_t bytesPublished() const {
    return channel_->bytesPublished();
  }

 private:
  // Sees `length` bytes of rank `peer`'s contribution, from byte `offset` on.
  using Take = std::function<void(int peer, int64_t offset, const uint8_t* data, int64_t length)>;
  // Runs the rounds of collective `what`: `bytes` per contributing rank
  // (`contributes(r)`), this rank's from `mine`; `take` sees every contributing peer's
  // chunk of each round in rank order, this rank's own included. A failure raises
  // DistBackendError naming `what`.
  void rounds(
      const char* what,
      int64_t bytes,
      const uint8_t* mine,
      const std::function<bool(int)>& contributes,
      const Take& take);

  void runRounds(int64_t bytes, const uint8_t* mine, const std::function<bool(int)>& contributes, const Take& take);

  std::unique_ptr<shm::Channel> channel_;
  int64_t chunkBytes_;  // a slot, rounded down so that a chunk never splits an element
  uint64_t round_ = 0;  // the last round this rank ran
};

} // namespace qccl::algo
