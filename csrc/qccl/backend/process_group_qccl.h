#pragma once

// qccl's c10d backend. Each op: validate on the caller's thread (bad input raises here),
// then hand the work to the group's worker (collectives) or to the point-to-point
// engine (p2p/), and return a Work at once. Calls on CUDA tensors go to the group's NCCL
// backend or are staged through host memory into the same CPU path (issue(), docs/cuda.md).
//
// The methods live by family: process_group_qccl.cpp (construction, the queue and its
// cross-rank check, issue(), lifecycle), collective_ops.cpp, allreduce_ops.cpp,
// cuda_route.cpp, p2p_ops.cpp, coalescing.cpp (docs/design.md, "Layers").

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "qccl/algo/agreement.h"
#include "qccl/algo/bucketed_allreduce.h"
#include "qccl/algo/one_host.h"
#include "qccl/algo/sharded_compression.h"
#include "qccl/backend/call_staging.h"
#include "qccl/backend/joint_allreduce.h"
#include "qccl/backend/op_queue.h"
#include "qccl/backend/peer_waits.h"
#include "qccl/backend/validation.h"
#include "qccl/common/config.h"
#include "qccl/p2p/inner_backend_p2p.h"
#include "qccl/p2p/p2p_engine.h"
#include "qccl/transport/gloo_transport.h"
#include "qccl/transport/host_layout.h"
#include "qccl/transport/node_groups.h"

namespace qccl {

class ProcessGroupQCCL : public c10d::Backend {
 public:
  // `gloo` is a ProcessGroupGloo over this group's store, rank and size: the transport
  // for CPU tensors. `nccl`, a ProcessGroupNCCL made the same way, carries CUDA tensors
  // when config.cudaTransport is Nccl; null when this process has no GPU or no NCCL.
  // `store` is the group's: over NCCL, ranks compare their p2p settings through it
  // (p2p/inner_backend_p2p.h); without it they are not compared.
  ProcessGroupQCCL(
      c10::intrusive_ptr<c10d::Backend> gloo,
      int rank,
      int size,
      std::chrono::milliseconds timeout,
      Config config = Config::fromEnvironment(),
      c10::intrusive_ptr<c10d::Backend> nccl = {},
      c10::intrusive_ptr<c10d::Store> store = {});
  ~ProcessGroupQCCL() override;

  const std::string getBackendName() const override {
    return "qccl";
  }

  c10::intrusive_ptr<c10d::Work> broadcast(
      std::vector<at::Tensor>& tensors,
      const c10d::BroadcastOptions& opts = c10d::BroadcastOptions()) override;
  c10::intrusive_ptr<c10d::Work> allreduce(
      std::vector<at::Tensor>& tensors,
      const c10d::AllreduceOptions& opts = c10d::AllreduceOptions()) override;
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(
      std::vector<at::Tensor>& tensors,
      const c10d::AllreduceCoalescedOptions& opts = c10d::AllreduceCoalescedOptions()) override;
  c10::intrusive_ptr<c10d::Work> reduce(
      std::vector<at::Tensor>& tensors,
      const c10d::ReduceOptions& opts = c10d::ReduceOptions()) override;
  c10::intrusive_ptr<c10d::Work> allgather(
      std::vector<std::vector<at::Tensor>>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(
      at::Tensor& output,
      at::Tensor& input,
      const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(
      std::vector<std::vector<at::Tensor>>& outputLists,
      std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> allgather_into_tensor_coalesced(
      std::vector<at::Tensor>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> gather(
      std::vector<std::vector<at::Tensor>>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::GatherOptions& opts = c10d::GatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> scatter(
      std::vector<at::Tensor>& outputs,
      std::vector<std::vector<at::Tensor>>& inputs,
      const c10d::ScatterOptions& opts = c10d::ScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(
      std::vector<at::Tensor>& outputs,
      std::vector<std::vector<at::Tensor>>& inputs,
      const c10d::ReduceScatterOptions& opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor& output,
      at::Tensor& input,
      const c10d::ReduceScatterOptions& opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter_tensor_coalesced(
      std::vector<at::Tensor>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::ReduceScatterOptions& opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(
      at::Tensor& output,
      at::Tensor& input,
      std::vector<int64_t>& outputSplits,
      std::vector<int64_t>& inputSplits,
      const c10d::AllToAllOptions& opts = c10d::AllToAllOptions()) override;
  c10::intrusive_ptr<c10d::Work> alltoall(
      std::vector<at::Tensor>& outputs,
      std::vector<at::Tensor>& inputs,
      const c10d::AllToAllOptions& opts = c10d::AllToAllOptions()) override;
  c10::intrusive_ptr<c10d::Work> barrier(
      const c10d::BarrierOptions& opts = c10d::BarrierOptions()) override;
  // Gloo's monitored barrier (same semantics and messages: rank 0 names the ranks that
  // did not arrive within opts.timeout), run by the worker in order with the group's
  // other calls, outside the cross-rank check.
  void monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks = false) override;

  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dstRank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int srcRank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override;

  // batch_isend_irecv and _coalescing_manager: ops issued between start and end are
  // covered by the one Work endCoalescing() returns.
  bool supportsCoalescing() const override {
    return true;
  }
  // split_group (DeviceMesh) and shrink_group: a new qccl group with this group's
  // settings (backend/group_membership.cpp). shrink's excluded ranks take no part (they may
  // be dead); kShrinkAbort first fails this group, so its pending calls raise at once.
  bool supportsSplitting() const override {
    return true;
  }
  c10::intrusive_ptr<Options> getBackendOptions() override;
  c10::intrusive_ptr<c10d::Backend> split(
      const c10::intrusive_ptr<c10d::Store>& store,
      const std::vector<int>& ranks,
      const c10::intrusive_ptr<Options>& opts) override;
  bool supportsShrinking() const override {
    return true;
  }
  static constexpr int kShrinkAbort = 0x01;  // torch.distributed.SHRINK_ABORT
  c10::intrusive_ptr<c10d::Backend> shrink(
      const std::vector<int64_t>& ranksToExclude,
      int shrinkFlags,
      const c10::intrusive_ptr<Options>& optsOverride) override;
  void startCoalescing() override;
  c10::intrusive_ptr<c10d::Work> endCoalescing() override;
  // Closes a coalescing window that an exception left open (torch's coalescing manager
  // has no try/finally): what was issued in it goes ahead, later calls run on their own.
  // Nothing happens when no window is open.
  void abandonCoalescing();

  uint64_t getSequenceNumberForGroup() override;
  void setSequenceNumberForGroup() override;
  void setTimeout(std::chrono::milliseconds timeout) override;

  // --- compression (qccl.stats, qccl.exact, qccl.state_dict) ---
  const Config& config() const {
    return config_;
  }
  algo::StatsSnapshot compressionStats() const {
    return allreduce_.stats();
  }
  const algo::ShardedCompression& shardedCompression() const {
    return sharded_;
  }
  // How many ranks share memory with this one, itself included (the group's, or its
  // node's in a hierarchical group; 0: none), and the bytes it put there (collectives'
  // and point-to-point messages').
  int sharedMemoryRanks() const {
    const auto* memory = sharedMemory();
    return memory ? memory->size() : 0;
  }
  uint64_t sharedMemoryBytes() const {
    const auto* memory = sharedMemory();
    return (memory ? memory->bytesPublished() : 0) + p2p_.bytesThroughMemory();
  }
  // Calls of any kind done from what their cross-rank check carried (algo/carried_call.h).
  int64_t callsInCheck() const {
    return callsInCheck_.load();
  }
  // How long this rank's cross-rank checks waited for each peer (backend/peer_waits.h).
  std::vector<PeerWaits::Peer> peerWaits() const {
    return peerWaits_.snapshot();
  }
  void resetCompressionStats() {
    allreduce_.resetStats();
    sharded_.resetStats();
    callsInCheck_ = 0;
    peerWaits_.reset();
  }
  // Compressible calls issued while the count is above zero are exact (qccl.exact()).
  void enterExactRegion();
  void exitExactRegion();
  // Waits for queued work, so that the state includes every call issued before.
  algo::CompressionState saveCompressionState();
  void loadCompressionState(const algo::CompressionState& state);

  // The first failure's kind: TIMEOUT, REMOTE_ERROR (a peer failed first and told this
  // rank), COMM_ERROR (a dead peer, a transport error, abort()); SUCCESS while it works.
  c10d::ErrorType getError() override;
  // Fails queued and running work at once.
  void abort() override;
  // Lets queued work finish (each op is bounded by the timeout), then releases the group.
  void shutdown() override;
  // Fails pending and later calls with `why`, without telling the peers (they are being
  // replaced too, or dead): its members changed (ReconfigurableGroup).
  void retire(const std::string& why) {
    failGroup(why, /*tellPeers=*/false);
  }
  // Fails what is still pending and joins the group's threads, without waiting for peers:
  // the interpreter's exit, for groups nobody destroyed (python/qccl/_exit.py).
  void closeAtExit();

 private:
  // Issues a collective: `validateAndIssue` validates and queues it. If it raises before
  // the call took its place in the group's order (a failed local check), a record marked
  // as failed takes that place, so the other ranks raise for the same call and the group
  // stays in step (algo/agreement.h).
  c10::intrusive_ptr<c10d::Work> collective(
      const std::string& name,
      c10d::OpType op,
      const std::function<c10::intrusive_ptr<c10d::Work>()>& validateAndIssue);
  // What the worker runs for a CPU call; returns the transfer it left running, if any
  // (algo/collectives.h), and the Work then completes when the transfer does.
  using OpBody = std::function<std::optional<StartedTransfer>()>;
  // A call's CPU path: what the Work returns, what else the call reads (OpQueue orders
  // calls that share a tensor), and the worker's part.
  struct CpuCall {
    std::vector<at::Tensor> outputs;
    std::vector<at::Tensor> inputs;
    OpBody body;
    // Set when the call's data may ride in its check; then the body finishes it from
    // what the check brought, if it did.
    std::shared_ptr<algo::CarriedCall> carried = nullptr;
  };
  // The CPU path built on the tensors `staging` maps: the caller's own, or host copies of
  // CUDA tensors, or contiguous copies of strided views (call_staging.h).
  using CpuCallOn = std::function<CpuCall(CallStaging& staging)>;
  // The call on the caller's CUDA tensors, issued on the group's NCCL backend.
  using NcclCall = std::function<c10::intrusive_ptr<c10d::Work>(c10d::Backend& nccl)>;
  // A collective as every route needs it.
  struct Collective {
    OpSignature signature;
    NcclCall nccl;
    CpuCallOn cpu;
    bool needsHost = false;  // on CUDA: a reduction NCCL lacks, staged through the host
  };
  // The one path of every collective but all_reduce, once `check` has validated its
  // arguments: CUDA tensors to NCCL (onNccl), or, like everything else, to the worker on
  // the tensors the call's staging gives (tracked by an open coalescing window).
  c10::intrusive_ptr<c10d::Work> issue(const std::string& name, const OpChecker& check, Collective call);
  // Queues a QueuedOp (see OpQueue) without tracking its Work: callers that return the
  // Work to the user pass it to track(). `inputs` are the tensors it reads besides its
  // outputs.
  c10::intrusive_ptr<FutureWork> place(
      const std::string& name,
      OpSignature signature,
      std::vector<at::Tensor> outputs,
      std::vector<at::Tensor> inputs,
      OpBody body,
      std::shared_ptr<algo::CarriedCall> carried = nullptr,
      std::shared_ptr<Joinable> joinable = nullptr,
      bool checked = true);
  // On the worker, for each batch of queued collectives: fails them all if the group is
  // out of step, otherwise compares them across ranks (unless QCCL_VERIFY=0) and fails
  // those the ranks disagree on (OpQueue::Admit).
  std::vector<std::exception_ptr> admit(const std::vector<const QueuedOp*>& batch);
  std::exception_ptr outOfStepError(const std::string& name) const;
  // Whether a call on CUDA tensors goes to NCCL: unless the transport is gloo or
  // `needsHost` (what NCCL cannot do), it is staged through host memory instead.
  bool cudaGoesToNccl(bool needsHost) const;
  // A call on CUDA tensors through NCCL, after the cross-rank check of `signature` (if
  // any) on the worker, in order with CPU calls.
  c10::intrusive_ptr<c10d::Work> onNccl(
      const std::string& name,
      const std::optional<OpSignature>& signature,
      const NcclCall& call);
  // Each tensor's allreduce route; records the plan in `signature`.
  std::vector<algo::Route> routeAll(
      const std::vector<at::Tensor>& tensors,
      const c10d::ReduceOp& op,
      OpSignature& signature) const;
  // all_reduce and all_reduce_coalesced on the tensors a `staging` in `mode` gives:
  // routes each tensor, then queues the reduction. Calls compressed throughout are
  // joinable (joint_allreduce.h).
  c10::intrusive_ptr<c10d::Work> allreduceList(
      const std::string& name,
      OpSignature signature,
      const std::vector<at::Tensor>& tensors,
      const c10d::ReduceOp& op,
      CallStaging::Mode mode);
  // all_reduce of a sparse COO tensor (SUM only): Gloo's sparse all-reduce, exact.
  c10::intrusive_ptr<c10d::Work> sparseAllreduce(const at::Tensor& tensor, const c10d::AllreduceOptions& opts);
  // On the worker: consecutive joinable all_reduces in one run (OpQueue::RunJointly).
  void allreduceJointly(const std::vector<QueuedOp*>& ops);
  // The same on CUDA tensors. Compressed routes run the GPU kernels over NCCL (on the
  // worker, enqueued on the caller's stream); exact ones go to NCCL through `nccl`; each
  // is staged through host memory where NCCL cannot reduce the dtype or op, or the
  // transport is gloo.
  c10::intrusive_ptr<c10d::Work> allreduceOnCuda(
      const std::string& name,
      OpSignature signature,
      const std::vector<at::Tensor>& tensors,
      const c10d::ReduceOp& op,
      const NcclCall& nccl);
  // Whether calls issued now are inside qccl.exact(): decided on the caller's thread, so
  // it applies to the calls made inside the block, whenever they run.
  bool insideExact() const {
    return exactDepth_.load() > 0;
  }
  // What compressed CPU calls of a flat group run over: shared memory on one host (their
  // encoded bytes), else Gloo.
  Transport& compressedNet() {
    return oneHost_ ? static_cast<Transport&>(*oneHost_) : transport_;
  }
  const algo::OneHost* sharedMemory() const {
    return oneHost_ ? oneHost_.get() : nodeMemory_.get();
  }
  // The node sub-groups compressed CPU calls run across (null: one node, or no hierarchy).
  const algo::NodeTransports* acrossNodes() const {
    return nodes_ ? &*nodes_ : nullptr;
  }
  // Whether `tensor` travels through NCCL (and not staged through host memory).
  bool travelsOnNccl(const at::Tensor& tensor) const;
  // Raises unless `peer` is another rank of the group, or this one inside a coalescing
  // window on NCCL, which pairs a rank's send to itself with its receive in one batch.
  void checkPeer(const OpChecker& check, const at::Tensor& tensor, int peer);
  // Records `work` for the open coalescing window, if any; returns it.
  c10::intrusive_ptr<c10d::Work> track(c10::intrusive_ptr<c10d::Work> work);
  void stop(const std::string& why);

  // --- a failed group (docs/errors.md, rule 9) ---
  // The worker queue's OnFailure: a call failed while running. Unless the error is about
  // its arguments (ValueError, TypeError, NotImplementedError), the group fails.
  void callFailed(const std::string& name, const std::exception_ptr& error);
  // The first failure that is not an argument error: recorded, told to every peer (unless
  // it came from one), and every pending and later call of the group fails with it, on
  // this rank at once and on the peers once the notice arrives. After a timeout a peer
  // may have completed the call this rank gave up on: without this, a retry here would
  // pair with that peer's next call and both would return wrong values.
  void failGroup(const std::string& why, bool tellPeers);
  // The error of a call made after the group failed; null while it has not.
  std::exception_ptr groupFailedError(const std::string& name) const;

  // Which of the group's ranks share a host, read at creation (none without a store).
  const std::optional<HostLayout> hosts_;
  const Config config_;  // ranks_per_node 0 (from the hosts) resolved from hosts_
  const int64_t settingsFingerprint_;  // config_.fingerprint(), sent with every collective
  GlooTransport transport_;
  // Shared memory among the group's ranks when they all share this host (and
  // force_network is off): exact collectives and the cross-rank check go through it.
  // Null otherwise. Used by the worker only, but for abort() and setTimeout().
  std::unique_ptr<algo::OneHost> oneHost_;
  // The node stages of hierarchical groups: shared memory when the node's ranks share a
  // host (and force_network is off), else nodeGroups_'s node transport.
  std::unique_ptr<algo::OneHost> nodeMemory_;
  std::unique_ptr<NodeGroups> nodeGroups_;  // on several nodes (ranks_per_node), else null
  std::optional<algo::NodeTransports> nodes_;  // nodeGroups_'s, for the algorithms
  algo::BucketedAllreduce allreduce_;
  algo::ShardedCompression sharded_;  // reduce-scatter and all-gather
  std::atomic<int64_t> callsInCheck_{0};  // for callsInCheck()
  PeerWaits peerWaits_{size_};
  std::atomic<int> exactDepth_{0};
  p2p::P2PEngine p2p_;
  c10::intrusive_ptr<c10d::Backend> nccl_;
  p2p::InnerBackendP2P ncclP2P_;  // CUDA point-to-point through nccl_
  c10::intrusive_ptr<c10d::Store> store_;  // the group's own (prefixed); null in some C++ tests
  std::chrono::milliseconds timeout_;
  int shrinks_ = 0;  // shrink() calls so far: each new group's store prefix
  std::atomic<uint64_t> seq_{0};
  // Set on the worker by a cross-rank disagreement that may mean a rank skipped a call:
  // why the group is out of step. From then on every collective of the group raises with
  // it. Worker only.
  std::string outOfStep_;
  ArgumentCheck check_;  // worker only
  mutable std::mutex failureMutex_;
  std::string failure_;  // failGroup()'s first reason; empty while the group works
  c10d::ErrorType failureKind_ = c10d::ErrorType::SUCCESS;  // of failure_

  std::mutex coalescingMutex_;
  bool coalescing_ = false;
  std::vector<c10::intrusive_ptr<c10d::Work>> coalesced_;
  std::atomic<bool> ncclCoalescing_{false};  // NCCL's own window is open

  // Declared last: its worker uses the members above.
  OpQueue queue_{
      rank_,
      [this](const std::vector<const QueuedOp*>& batch) { return admit(batch); },
      [this](const std::vector<QueuedOp*>& ops) { allreduceJointly(ops); },
      [this](const std::string& name, const std::exception_ptr& error) { callFailed(name, error); }};
};

} // namespace qccl
