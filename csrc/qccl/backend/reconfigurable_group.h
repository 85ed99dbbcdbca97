#pragma once

// A qccl group whose members can change in place: c10d's reconfigure API
// (`init_process_group(..., enable_reconfigure=True)`, `dist._get_reconfigure_handle`,
// `dist._reconfigure(uuid, handles)`, docs/guide/errors.md "Healing without a restart").
//
// It holds a ProcessGroupQCCL over the current members and passes every call to it.
// reconfigure() builds a new one from the handles (each peer's address and identity) on
// the store the first handle names, then swaps it in: the Python group object, its
// settings and, where this rank keeps its rank in a group of the same size, its
// compression state (error-feedback residuals, seeds) carry over. Calls still pending on
// the previous members fail at once; they never hang and never pair with the new ones.
// Created without members (c10d's "reconfigure regime"): a call before the first
// reconfigure() raises.

#include <chrono>
#include <mutex>
#include <set>
#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/config.h"

namespace qccl {

class ReconfigurableGroup : public c10d::Backend {
 public:
  // `store` is the one init_process_group gave: its TCPStore's address goes into this
  // rank's handle, so that the members of a reconfigure meet on the first one's store.
  ReconfigurableGroup(
      c10::intrusive_ptr<c10d::Store> store,
      int rank,
      int size,
      std::chrono::milliseconds timeout,
      Config config);
  ~ReconfigurableGroup() override;

  const std::string getBackendName() const override {
    return "qccl";
  }
  bool supportsReconfigure() const override {
    return true;
  }
  // "qccl:<this process and group>@<host>:<port>" (the TCPStore under the group's store).
  c10d::ReconfigureHandle get_reconfigure_handle() const override;
  // Collective over the handles' members, each passing the same handles and a uuid not
  // used before on this group. Bad handles, a reused uuid or this rank's handle missing
  // raise c10::ValueError and leave the group as it was. Done on return; the Work is
  // completed.
  c10::intrusive_ptr<c10d::Work> reconfigure(const c10d::ReconfigureOptions& opts) override;
  // The group of the current members (Python's qccl.stats and friends go through it).
  c10::intrusive_ptr<ProcessGroupQCCL> current() const;

  // --- every call goes to current() ---
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors, const c10d::BroadcastOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors, const c10d::AllreduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(
      std::vector<at::Tensor>& tensors,
      const c10d::AllreduceCoalescedOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors, const c10d::ReduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather(
      std::vector<std::vector<at::Tensor>>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input, const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(
      std::vector<std::vector<at::Tensor>>& outputLists,
      std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather_into_tensor_coalesced(
      std::vector<at::Tensor>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> gather(
      std::vector<std::vector<at::Tensor>>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> scatter(
      std::vector<at::Tensor>& outputs,
      std::vector<std::vector<at::Tensor>>& inputs,
      const c10d::ScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(
      std::vector<at::Tensor>& outputs,
      std::vector<std::vector<at::Tensor>>& inputs,
      const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor& output,
      at::Tensor& input,
      const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter_tensor_coalesced(
      std::vector<at::Tensor>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(
      at::Tensor& output,
      at::Tensor& input,
      std::vector<int64_t>& outputSplits,
      std::vector<int64_t>& inputSplits,
      const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall(
      std::vector<at::Tensor>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override;
  void monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks) override;
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dstRank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int srcRank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override;
  bool supportsCoalescing() const override {
    return true;
  }
  void startCoalescing() override;
  c10::intrusive_ptr<c10d::Work> endCoalescing() override;
  uint64_t getSequenceNumberForGroup() override;
  void setSequenceNumberForGroup() override {}
  void setTimeout(std::chrono::milliseconds timeout) override;
  c10d::ErrorType getError() override;
  void abort() override;
  void shutdown() override;

 private:
  // The group of the current members, or null before the first reconfigure().
  c10::intrusive_ptr<ProcessGroupQCCL> currentOrNull() const;

  const c10::intrusive_ptr<c10d::Store> store_;
  const std::string identity_;  // this process and group, unique on the host
  const Config config_;
  mutable std::mutex mutex_;
  std::chrono::milliseconds timeout_;  // the next members' unless reconfigure() names one
  c10::intrusive_ptr<ProcessGroupQCCL> group_;  // null before the first reconfigure()
  std::set<int64_t> usedUuids_;
};

} // namespace qccl
