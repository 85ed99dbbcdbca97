#pragma once

// Consecutive compressed all_reduces of a group run together, in one chunk pipeline
// (algo::BucketedAllreduce::run of several calls): a burst of async calls (DDP's bucket
// gradients) pays the pipeline's latency once instead of once per call, with results bit
// for bit those of one call after the other.
//
// Not when a call touches a tensor an earlier call of its run touches: one after the
// other, the later call reduces what the earlier one wrote; together it would read the
// tensor first. Runs form within one batch of calls checked across ranks together, so
// the batch is the same on every rank; each call's "touches an earlier call of this
// batch" travels with its check record, and a call starts a run where any rank's does,
// so every rank splits the batch into the same runs. Without the check (QCCL_VERIFY=0)
// batches differ across ranks: no call joins.

#include <vector>

#include "qccl/algo/bucketed_allreduce.h"
#include "qccl/backend/op_queue.h"

namespace qccl {

class JoinableAllreduce : public Joinable {
 public:
  explicit JoinableAllreduce(algo::AllreduceCall call) : call_(std::move(call)) {}

  bool joins(const Joinable& previous) const override {
    return !startsRun_ && dynamic_cast<const JoinableAllreduce*>(&previous) != nullptr;
  }
  const algo::AllreduceCall& call() const {
    return call_;
  }
  // Set by the check of the batch that holds the call (applyRunStarts), on the worker.
  void setStartsRun(bool startsRun) {
    startsRun_ = startsRun;
  }

 private:
  algo::AllreduceCall call_;
  bool startsRun_ = true;
};

// For each joinable call of `batch` (oldest first), whether it shares a storage with an
// earlier call of the batch, into `signatures` (the calls' signatures as the check will
// send them).
void markRunStarts(const std::vector<const QueuedOp*>& batch, std::vector<OpSignature>& signatures);
// Sets each checked call's run start as the check combined it (CheckResult::startsRun).
void applyRunStarts(const std::vector<const QueuedOp*>& batch, const std::vector<bool>& startsRun);

} // namespace qccl
