#pragma once

// A small call whose data travels with its cross-rank check (algo/agreement.h): every
// rank's contribution rides in the check's exchange, and each rank finishes the call from
// them itself, so the call needs no exchange of its own. On a link with latency it costs
// the check's one trip instead of the check's and its own; on one host, one round of
// shared memory instead of two.
//
// A call qualifies only where finishing it this way gives the bits its own exchange
// would (local_allreduce.h, carried_calls.h), and only from facts every rank shares
// (dtype, sizes, op, world size), so all ranks decide alike. The check then carries a
// contribution only while the ranks agree on the call and on all before it in the batch,
// and only for a call no earlier call of the batch writes to (backend/op_queue.cpp).

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace qccl::algo {

// The most bytes of contributions one check exchange carries, per rank, at small world
// sizes: with the records, a part stays within one control message of the point-to-point
// engine (p2p/message.h) and TCP's initial window, so it arrives in one trip.
constexpr int64_t kMaxInlineBytes = 8 << 10;

// The most room for contributions in each rank's part of a check exchange of
// `worldSize` ranks (the check sizes the room by what calls needed lately). The exchange
// sends every part to every peer, so each rank receives worldSize - 1 of them: the room
// shrinks as the world grows, to keep what a rank receives at most about 64 KiB (8 KiB
// up to 9 ranks, 1 KiB at 64, 64 bytes from 1024 on, which still carries a few scalars).
int64_t inlineBytesPerCheck(int worldSize);

class CarriedCall {
 public:
  virtual ~CarriedCall() = default;
  // This rank's contribution as bytes, read from its tensors now; the same size on every
  // rank.
  virtual at::Tensor contribution() const = 0;
  // Every rank's contribution (in rank order, as contribution() wrote them) came with
  // the check.
  void received(std::vector<at::Tensor> contributions) {
    contributions_ = std::move(contributions);
  }
  bool hasContributions() const {
    return !contributions_.empty();
  }
  // Finishes the call from the contributions, then lets them go.
  void finish() {
    finishFrom(contributions_);
    contributions_.clear();
  }

 protected:
  virtual void finishFrom(const std::vector<at::Tensor>& contributions) = 0;

 private:
  std::vector<at::Tensor> contributions_;
};

} // namespace qccl::algo
