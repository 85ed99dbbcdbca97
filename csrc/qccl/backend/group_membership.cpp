// A group's members change: split (split_group, DeviceMesh) and shrink (shrink_group)
// make a new qccl group with this group's settings over new transports.

#include <algorithm>
#include <iterator>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "qccl/backend/live_groups.h"
#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/errors.h"
#include "qccl/transport/fresh_prefix.h"
#include "qccl/transport/gloo_factory.h"

namespace qccl {

c10::intrusive_ptr<c10d::Backend::Options> ProcessGroupQCCL::getBackendOptions() {
  // The transport's options (devices, timeout): what a split of it needs.
  return transport_.gloo().getBackendOptions();
}

c10::intrusive_ptr<c10d::Backend> ProcessGroupQCCL::split(
    const c10::intrusive_ptr<c10d::Store>& store,
    const std::vector<int>& ranks,
    const c10::intrusive_ptr<Options>& opts) {
  // `ranks` are this group's ranks of the new one, in its order (as Gloo's split reads them).
  const auto mine = std::find(ranks.begin(), ranks.end(), rank_);
  if (mine == ranks.end()) {
    return nullptr;  // this rank is not in the new group
  }
  // Keys under a prefix of this creation's own, as every qccl group's: the store torch
  // hands over outlives a torchrun restart, with the previous attempt's keys in it.
  const int newRank = static_cast<int>(std::distance(ranks.begin(), mine));
  auto fresh = c10::make_intrusive<c10d::PrefixStore>(
      agreeOnFreshPrefix(store, newRank, static_cast<int>(ranks.size()), opts->timeout), store);
  auto gloo = transport_.gloo().split(fresh, ranks, opts);
  c10::intrusive_ptr<c10d::Backend> nccl;
  if (nccl_) {
    auto ncclOptions = nccl_->getBackendOptions();
    ncclOptions->timeout = opts->timeout;
    nccl = nccl_->split(c10::make_intrusive<c10d::PrefixStore>("qccl/nccl/", fresh), ranks, ncclOptions);
  }
  auto child = c10::make_intrusive<ProcessGroupQCCL>(
      gloo, gloo->getRank(), gloo->getSize(), opts->timeout, config_, nccl, fresh);
  rememberLiveGroup(child);
  return child;
}

c10::intrusive_ptr<c10d::Backend> ProcessGroupQCCL::shrink(
    const std::vector<int64_t>& ranksToExclude,
    int shrinkFlags,
    const c10::intrusive_ptr<Options>& optsOverride) {
  QCCL_CHECK_VALUE(store_, "shrink needs the group's store; this group was made without one");
  std::vector<bool> excluded(size_, false);
  for (const auto rank : ranksToExclude) {
    QCCL_CHECK_VALUE(rank >= 0 && rank < size_, "shrink: rank ", rank, " is not in this group of ", size_);
    excluded[rank] = true;
  }
  QCCL_CHECK_VALUE(!excluded[rank_], "shrink: rank ", rank_, " is excluded, so it must not call shrink");
  // NCCL first: with SHRINK_ABORT it aborts its own parent communicator (not run on a GPU yet).
  c10::intrusive_ptr<c10d::Backend> nccl;
  if (nccl_ && nccl_->supportsShrinking()) {
    nccl = nccl_->shrink(ranksToExclude, shrinkFlags, nullptr);
  }
  if (shrinkFlags & kShrinkAbort) {
    failGroup("rank " + std::to_string(rank_) + " shrank the group with SHRINK_ABORT", true);
    stop("the process group was shrunk with SHRINK_ABORT");
  }
  const int newRank = static_cast<int>(std::count(excluded.begin(), excluded.begin() + rank_, false));
  const int newSize = static_cast<int>(std::count(excluded.begin(), excluded.end(), false));
  const auto timeout = optsOverride ? optsOverride->timeout : timeout_;
  // Under a prefix that this shrink's ranks, and only they, agree on: the survivors of
  // the n-th shrink of this group; inside it a fresh one, as every creation takes.
  auto shrunkStore = c10::make_intrusive<c10d::PrefixStore>("shrink/" + std::to_string(++shrinks_) + "/", store_);
  auto fresh = c10::make_intrusive<c10d::PrefixStore>(agreeOnFreshPrefix(shrunkStore, newRank, newSize, timeout), shrunkStore);
  auto gloo = makeGlooBackend(c10::make_intrusive<c10d::PrefixStore>("gloo/", fresh), newRank, newSize, timeout);
  auto shrunk = c10::make_intrusive<ProcessGroupQCCL>(gloo, newRank, newSize, timeout, config_, nccl, fresh);
  rememberLiveGroup(shrunk);
  return shrunk;
}

} // namespace qccl
