#include "qccl/backend/process_group_qccl.h"

#include <algorithm>
#include <iterator>

#include <ATen/record_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "qccl/backend/check_exchange.h"
#include "qccl/common/errors.h"
#include "qccl/transport/shm/connect.h"

namespace qccl {

using c10d::OpType;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

namespace {

// Bytes a round of the one-host channel carries per rank (two slots each): larger calls
// take several rounds. 4 ranks hold 8 MiB of /dev/shm.
constexpr uint64_t kOneHostSlotBytes = 1 << 20;

// The shared-memory channel of `size` ranks on this host that know each other through
// `store`, or null when /dev/shm cannot hold it (they keep the network).
std::unique_ptr<algo::OneHost> connectOneHost(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    std::chrono::milliseconds timeout) {
  auto channel = shm::connectSharedMemory(*store, rank, size, kOneHostSlotBytes, timeout);
  return channel ? std::make_unique<algo::OneHost>(std::move(channel)) : nullptr;
}

// Bytes each rank's stream to each peer holds (transport/shm/mailbox.h): a larger
// message streams through while the receiver reads. 4 ranks hold 3 MiB per rank.
constexpr uint64_t kMailboxRingBytes = 1 << 20;

// `config` with ranks_per_node 0 (the default) replaced by the nodes the hosts make.
Config withNodesOf(Config config, const std::optional<HostLayout>& hosts) {
  if (config.ranksPerNode == 0) {
    config.ranksPerNode = hosts ? hosts->ranksPerNode() : 1;
  }
  return config;
}

bool hierarchical(const Config& config, int size) {
  return config.ranksPerNode > 1 && config.ranksPerNode < size;
}

} // namespace

ProcessGroupQCCL::ProcessGroupQCCL(
    c10::intrusive_ptr<c10d::Backend> gloo,
    int rank,
    int size,
    std::chrono::milliseconds timeout,
    Config config,
    c10::intrusive_ptr<c10d::Backend> nccl,
    c10::intrusive_ptr<c10d::Store> store)
    : Backend(rank, size),
      hosts_(store && size > 1 ? std::optional<HostLayout>(HostLayout::share(*store, rank, size)) : std::nullopt),
      config_(withNodesOf(config, hosts_)),
      settingsFingerprint_(config_.fingerprint()),
      transport_(std::move(gloo), timeout),
      oneHost_(hosts_ && hosts_->oneHost() && !config_.forceNetwork ? connectOneHost(store, rank, size, timeout) : nullptr),
      nodeMemory_(
          hierarchical(config_, size) && !config_.forceNetwork && hosts_ &&
                  hosts_->shareAHost(rank / config_.ranksPerNode * config_.ranksPerNode, config_.ranksPerNode)
              ? connectOneHost(NodeGroups::nodeStore(store, rank, config_.ranksPerNode),
                               rank % config_.ranksPerNode, config_.ranksPerNode, timeout)
              : nullptr),
      nodeGroups_(
          hierarchical(config_, size)
              ? std::make_unique<NodeGroups>(store, rank, size, static_cast<int>(config_.ranksPerNode), timeout, !nodeMemory_)
              : nullptr),
      allreduce_(config, size),
      sharded_(config, size),
      p2p_(transport_, config, rank, size,
           [this](int peer, const std::string& why) {
             failGroup("rank " + std::to_string(peer) + " reported that the group failed there: " + why, false);
           },
           // Only where the collectives got shared memory: a /dev/shm too small for them
           // keeps every op on sockets, with one warning.
           oneHost_ ? shm::connectMailbox(*store, rank, size, kMailboxRingBytes, timeout) : nullptr),
      nccl_(std::move(nccl)),
      ncclP2P_(config, rank, store, nccl_.defined()),
      store_(std::move(store)),
      timeout_(timeout) {
  QCCL_CHECK_VALUE(
      transport_.rank() == rank && transport_.size() == size,
      "the Gloo transport is rank ", transport_.rank(), " of ", transport_.size(),
      " but the group is rank ", rank, " of ", size);
  QCCL_CHECK_VALUE(
      !nccl_ || (nccl_->getRank() == rank && nccl_->getSize() == size),
      "the NCCL transport is rank ", nccl_ ? nccl_->getRank() : -1, " of ", nccl_ ? nccl_->getSize() : -1,
      " but the group is rank ", rank, " of ", size);
  if (nodeGroups_) {
    nodes_.emplace(algo::NodeTransports{nodeMemory_.get(), nodeGroups_->node(), nodeGroups_->cross()});
  }
  init();
}

ProcessGroupQCCL::~ProcessGroupQCCL() {
  stop("the process group was destroyed");
}

namespace {
// Collectives this thread has put into a group's order; collective() compares it before
// and after issuing a call to learn whether the call took its place.
thread_local uint64_t callsPlacedByThisThread = 0;

// What every call raises once the group failed with `why` (docs/errors.md, rule 9).
std::string unusableSince(const std::string& why) {
  return "the group failed earlier (" + why + "), so no later call of it can pair safely with the other ranks' "
      "calls; create a new group (destroy_process_group, then init_process_group or new_group), or reconfigure "
      "it if it was made with enable_reconfigure=True";
}
} // namespace

WorkPtr ProcessGroupQCCL::collective(const std::string& name, OpType op, const std::function<WorkPtr()>& validateAndIssue) {
  const uint64_t placedBefore = callsPlacedByThisThread;
  try {
    return validateAndIssue();
  } catch (...) {
    if (callsPlacedByThisThread == placedBefore && config_.verifyAcrossRanks) {
      OpSignature failed;
      failed.op = op;
      failed.failedHere = true;
      // Nobody waits for it: the caller has its error.
      place(name, std::move(failed), {}, {}, [] { return std::optional<StartedTransfer>(); });
    }
    throw;
  }
}

WorkPtr ProcessGroupQCCL::issue(const std::string& name, const OpChecker& check, Collective call) {
  if (check.onCuda() && cudaGoesToNccl(call.needsHost)) {
    return onNccl(name, call.signature, call.nccl);
  }
  CallStaging staging(CallStaging::modeFor(check.onCuda(), check.strided()), rank_);
  auto cpu = call.cpu(staging);
  auto work = place(
      name, std::move(call.signature), std::move(cpu.outputs), std::move(cpu.inputs), std::move(cpu.body),
      std::move(cpu.carried));
  return track(staging.finish(work));
}

c10::intrusive_ptr<FutureWork> ProcessGroupQCCL::place(
    const std::string& name,
    OpSignature signature,
    std::vector<at::Tensor> outputs,
    std::vector<at::Tensor> inputs,
    OpBody body,
    std::shared_ptr<algo::CarriedCall> carried,
    std::shared_ptr<Joinable> joinable,
    bool checked) {
  signature.settings = settingsFingerprint_;
  // Tensors with storage: a sparse all-reduce blocks the worker until its sum is in place,
  // so no later call can overlap it anyway.
  std::vector<at::Tensor> touches;
  for (const auto* list : {&outputs, &inputs}) {
    std::copy_if(list->begin(), list->end(), std::back_inserter(touches), [](const at::Tensor& t) {
      return t.layout() == at::kStrided;
    });
  }
  c10::intrusive_ptr<FutureWork> work = c10::make_intrusive<QueuedWork>(
      queue_, rank_, signature.op, name, std::move(outputs), ++seq_, std::vector<c10::Device>{}, inputs);
  ++callsPlacedByThisThread;
  if (auto failed = groupFailedError(name)) {
    work->markFailed(failed);
    return work;
  }
  queue_.enqueue(
      {work, name, std::move(signature), std::move(touches), std::move(body), std::move(carried), std::move(joinable),
       at::hasThreadLocalCallbacks() ? std::make_shared<at::ThreadLocalState>() : nullptr, checked});
  return work;
}

std::vector<std::exception_ptr> ProcessGroupQCCL::admit(const std::vector<const QueuedOp*>& queued) {
  std::vector<std::exception_ptr> verdicts;
  // An unchecked call runs alone, and a checked batch stops before one, so that every
  // rank checks the same calls before and after it.
  if (!queued[0]->checked) {
    return {outOfStep_.empty() ? nullptr : outOfStepError(queued[0]->name)};
  }
  const std::vector<const QueuedOp*> batch(
      queued.begin(), std::find_if(queued.begin(), queued.end(), [](const QueuedOp* op) { return !op->checked; }));
  if (!outOfStep_.empty()) {
    for (const auto* op : batch) {
      verdicts.push_back(outOfStepError(op->name));
    }
    return verdicts;
  }
  if (!config_.verifyAcrossRanks) {
    return std::vector<std::exception_ptr>(batch.size());
  }
  std::vector<OpSignature> signatures;
  for (const auto* op : batch) {
    signatures.push_back(op->signature);
  }
  markRunStarts(batch, signatures);
  std::vector<CallToCheck> calls;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto* op = batch[i];
    calls.push_back({op->name, &signatures[i], op->ridesInCheck ? op->carried->contribution() : at::Tensor()});
  }
  std::vector<int64_t> waitedNs(size_, 0);
  auto checked = check_.compareAcrossRanks(rank_, size_, calls, [&](const at::Tensor& mine, const std::string& what) {
    return oneHost_ ? oneHost_->exchange(mine, what, &waitedNs) : exchangeCheckParts(p2p_, transport_, mine, what, waitedNs);
  });
  peerWaits_.add(rank_, waitedNs);
  for (size_t i = 0; i < checked.contributions.size(); ++i) {
    batch[i]->carried->received(std::move(checked.contributions[i]));
  }
  callsInCheck_ += static_cast<int64_t>(checked.contributions.size());
  applyRunStarts(batch, checked.startsRun);
  const auto& disagreements = checked.verdicts;
  for (size_t i = 0; i < disagreements.size(); ++i) {
    if (!outOfStep_.empty()) {
      verdicts.push_back(outOfStepError(calls[i].opName));  // after a Call disagreement earlier in this batch
      continue;
    }
    const auto& disagreement = disagreements[i];
    if (!disagreement) {
      verdicts.emplace_back();
      continue;
    }
    if (disagreement->kind == Disagreement::Kind::Call) {
      outOfStep_ = "an earlier collective whose arguments did not match across ranks (" + disagreement->message + ")";
    }
    try {
      QCCL_CHECK_VALUE(false, disagreement->message);
    } catch (...) {
      verdicts.push_back(std::current_exception());
    }
  }
  return verdicts;
}

std::exception_ptr ProcessGroupQCCL::outOfStepError(const std::string& name) const {
  return makeCommError(
      name + " on rank " + std::to_string(rank_) + ": the group is out of step since " + outOfStep_ +
      ". A rank may have skipped a call (an error raised before the call reached qccl), so no later collective "
      "of this group would pair with the right one; create a new group");
}

// --- a failed group ------------------------------------------------------------------------

void ProcessGroupQCCL::callFailed(const std::string& name, const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::ValueError&) {
    return;  // arguments: rules 1 and 2 keep the ranks in step
  } catch (const c10::TypeError&) {
    return;
  } catch (const c10::NotImplementedError&) {
    return;
  } catch (...) {
  }
  failGroup(describeCause(error), true);
}

void ProcessGroupQCCL::failGroup(const std::string& why, bool tellPeers) {
  {
    std::lock_guard<std::mutex> lock(failureMutex_);
    if (!failure_.empty()) {
      return;
    }
    failure_ = why;
    // A peer's notice quotes the peer's reason, which may be its timeout: it is remote here.
    if (!tellPeers || why.find("closed its shared-memory channel") != std::string::npos) {
      failureKind_ = c10d::ErrorType::REMOTE_ERROR;
    } else if (why.find(" Timed out ") != std::string::npos) {
      failureKind_ = c10d::ErrorType::TIMEOUT;
    } else {
      failureKind_ = c10d::ErrorType::COMM_ERROR;
    }
  }
  // Peers first: the transport's abort below cuts short what this rank waits for.
  if (tellPeers) {
    p2p_.tellPeersGroupFailed(why);
  }
  p2p_.failGroup(unusableSince(why));
  for (auto* memory : {oneHost_.get(), nodeMemory_.get()}) {
    if (memory) {
      memory->abort(why);
    }
  }
  if (nodeGroups_) {
    nodeGroups_->abort();
  }
  queue_.fail(makeCommError("a call still pending on rank " + std::to_string(rank_) + ": " + unusableSince(why)));
  transport_.abort();  // wakes the worker if it waits for a transfer
}

c10d::ErrorType ProcessGroupQCCL::getError() {
  std::lock_guard<std::mutex> lock(failureMutex_);
  return failureKind_;
}

std::exception_ptr ProcessGroupQCCL::groupFailedError(const std::string& name) const {
  std::lock_guard<std::mutex> lock(failureMutex_);
  if (failure_.empty()) {
    return nullptr;
  }
  return makeCommError(name + " on rank " + std::to_string(rank_) + ": " + unusableSince(failure_));
}

// --- compression state ---------------------------------------------------------------------

void ProcessGroupQCCL::enterExactRegion() {
  exactDepth_.fetch_add(1);
}

void ProcessGroupQCCL::exitExactRegion() {
  if (exactDepth_.fetch_sub(1) <= 0) {
    exactDepth_.fetch_add(1);
    QCCL_CHECK_VALUE(false, "an exact region was exited more often than entered");
  }
}

algo::CompressionState ProcessGroupQCCL::saveCompressionState() {
  queue_.drain();
  algo::CompressionState state;
  allreduce_.saveInto(state);
  sharded_.saveInto(state);
  return state;
}

void ProcessGroupQCCL::loadCompressionState(const algo::CompressionState& state) {
  queue_.drain();
  allreduce_.loadFrom(state);
  sharded_.loadFrom(state);
}

// --- group state ---------------------------------------------------------------------------

uint64_t ProcessGroupQCCL::getSequenceNumberForGroup() {
  return seq_.load();
}

void ProcessGroupQCCL::setSequenceNumberForGroup() {
  // Sequence numbers start at 0 on every rank; nothing to agree on.
}

void ProcessGroupQCCL::setTimeout(std::chrono::milliseconds timeout) {
  transport_.setTimeout(timeout);
  for (auto* memory : {oneHost_.get(), nodeMemory_.get()}) {
    if (memory) {
      memory->setTimeout(timeout);
    }
  }
  if (nodeGroups_) {
    nodeGroups_->setTimeout(timeout);
  }
}

void ProcessGroupQCCL::stop(const std::string& why) {
  queue_.stop(makeCommError(why + " (rank " + std::to_string(rank_) + ")"));
  p2p_.shutdown(why);
}

void ProcessGroupQCCL::abort() {
  // Tells the peers, and aborts the Gloo transport and the shared-memory channel.
  failGroup("rank " + std::to_string(rank_) + " aborted the group", true);
  if (nccl_) {
    nccl_->abort();
  }
  stop("the process group was aborted");
}

void ProcessGroupQCCL::closeAtExit() {
  stop("the process is exiting");
}

void ProcessGroupQCCL::shutdown() {
  if (nccl_) {
    nccl_->shutdown();
  }
  queue_.drain();
  stop("the process group was shut down");
}

} // namespace qccl
