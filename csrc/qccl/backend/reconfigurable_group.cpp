#include "qccl/backend/reconfigurable_group.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <set>
#include <variant>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "qccl/backend/live_groups.h"
#include "qccl/common/errors.h"
#include "qccl/transport/fresh_prefix.h"
#include "qccl/transport/gloo_factory.h"
#include "qccl/work/work.h"

namespace qccl {
namespace {

using WorkPtr = c10::intrusive_ptr<c10d::Work>;

constexpr const char* kHandlePrefix = "qccl:";
constexpr const char* kNoAddress = "local";  // a store that is not a TCPStore

// The store under torch's group prefixes: every member meets there, whatever its group's
// name in its own process.
c10::intrusive_ptr<c10d::Store> baseOf(const c10::intrusive_ptr<c10d::Store>& store) {
  if (auto* prefix = dynamic_cast<c10d::PrefixStore*>(store.get())) {
    return prefix->getUnderlyingNonPrefixStore();
  }
  return store;
}

// "host:port" of the TCPStore under `store`, or kNoAddress.
std::string addressOf(const c10::intrusive_ptr<c10d::Store>& store) {
  if (auto* tcp = dynamic_cast<c10d::TCPStore*>(baseOf(store).get())) {
    return tcp->getHost() + ":" + std::to_string(tcp->getPort());
  }
  return kNoAddress;
}

std::string uniqueIdentity() {
  static std::atomic<int> groups{0};
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + "." + std::to_string(getpid()) + "." + std::to_string(groups++);
}

struct Handle {
  std::string identity;
  std::string address;  // "host:port" or kNoAddress
};

std::optional<Handle> parse(const std::string& text) {
  const std::string prefix = kHandlePrefix;
  const auto at = text.rfind('@');
  if (text.rfind(prefix, 0) != 0 || at == std::string::npos || at <= prefix.size() || at + 1 == text.size()) {
    return std::nullopt;
  }
  return Handle{text.substr(prefix.size(), at - prefix.size()), text.substr(at + 1)};
}

// The handles in rank order: a list as given, a set sorted (every member sorts alike).
std::vector<std::string> inRankOrder(const c10d::ReconfigureOptions& opts) {
  if (const auto* list = std::get_if<std::vector<c10d::ReconfigureHandle>>(&opts.handles)) {
    return *list;
  }
  const auto& set = std::get<std::unordered_set<c10d::ReconfigureHandle>>(opts.handles);
  std::vector<std::string> sorted(set.begin(), set.end());
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

// Where the members meet: this rank's own store when the first handle names it, else a
// client of the TCPStore it names.
c10::intrusive_ptr<c10d::Store> meetingStore(
    const Handle& first,
    const c10::intrusive_ptr<c10d::Store>& own,
    std::chrono::milliseconds timeout) {
  if (first.address == addressOf(own) || first.address == kNoAddress) {
    return baseOf(own);
  }
  const auto colon = first.address.rfind(':');
  QCCL_CHECK_VALUE(colon != std::string::npos, "reconfigure: the first handle's store address '", first.address,
                   "' is not host:port");
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(std::stoi(first.address.substr(colon + 1)));
  options.isServer = false;
  options.waitWorkers = false;
  options.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(first.address.substr(0, colon), options);
}

} // namespace

ReconfigurableGroup::ReconfigurableGroup(
    c10::intrusive_ptr<c10d::Store> store,
    int rank,
    int size,
    std::chrono::milliseconds timeout,
    Config config)
    : Backend(rank, size),
      store_(std::move(store)),
      identity_(uniqueIdentity()),
      config_(std::move(config)),
      timeout_(timeout) {
  QCCL_CHECK_VALUE(store_, "a reconfigurable qccl group needs a store, not null");
}

ReconfigurableGroup::~ReconfigurableGroup() = default;

c10d::ReconfigureHandle ReconfigurableGroup::get_reconfigure_handle() const {
  return kHandlePrefix + identity_ + "@" + addressOf(store_);
}

WorkPtr ReconfigurableGroup::reconfigure(const c10d::ReconfigureOptions& opts) {
  // Everything that can be wrong with the arguments raises before anything changes.
  const auto handles = inRankOrder(opts);
  QCCL_CHECK_VALUE(!handles.empty(), "reconfigure needs one handle per member, got none");
  std::vector<Handle> members;
  for (const auto& text : handles) {
    auto handle = parse(text);
    QCCL_CHECK_VALUE(handle, "reconfigure: '", text, "' is not a qccl handle (qccl:<identity>@<store address>, "
                     "from dist._get_reconfigure_handle on a qccl group made with enable_reconfigure=True)");
    members.push_back(*handle);
  }
  const auto mine = std::find(handles.begin(), handles.end(), get_reconfigure_handle());
  QCCL_CHECK_VALUE(mine != handles.end(), "reconfigure: this rank's handle ", get_reconfigure_handle(),
                   " is not among the ", handles.size(), " handles");
  QCCL_CHECK_VALUE(std::set<std::string>(handles.begin(), handles.end()).size() == handles.size(),
                   "reconfigure: a handle appears more than once among the ", handles.size(), " handles");
  std::chrono::milliseconds timeout;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    QCCL_CHECK_VALUE(!usedUuids_.count(opts.uuid), "reconfigure: uuid ", opts.uuid,
                     " was used before on this group; every reconfigure needs a fresh one");
    usedUuids_.insert(opts.uuid);
    timeout = opts.timeout.value_or(timeout_);
  }
  const int rank = static_cast<int>(std::distance(handles.begin(), mine));
  const int size = static_cast<int>(handles.size());

  // The previous members' calls fail now: a dead peer's would otherwise wait out the
  // timeout, and none may pair with the new members' calls.
  auto previous = currentOrNull();
  const std::string why = "its members were replaced by a reconfigure (uuid " + std::to_string(opts.uuid) + ")";
  if (previous) {
    previous->retire(why);
  }
  // Keys of this reconfigure only: two groups of a job may pick the same uuid, never the
  // same first member.
  auto meeting = c10::make_intrusive<c10d::PrefixStore>(
      "qccl/reconfigure/" + members[0].identity + "/" + std::to_string(opts.uuid) + "/",
      meetingStore(members[0], store_, timeout));
  auto fresh = c10::make_intrusive<c10d::PrefixStore>(agreeOnFreshPrefix(meeting, rank, size, timeout), meeting);
  auto gloo = makeGlooBackend(c10::make_intrusive<c10d::PrefixStore>("gloo/", fresh), rank, size, timeout);
  auto next = c10::make_intrusive<ProcessGroupQCCL>(gloo, rank, size, timeout, config_, nullptr, fresh);
  rememberLiveGroup(next);
  if (previous) {
    // Error feedback and seeds belong to this rank's place: kept where it is unchanged.
    if (previous->getRank() == rank && previous->getSize() == size) {
      next->loadCompressionState(previous->saveCompressionState());
    }
    previous->shutdown();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    group_ = next;
    rank_ = rank;
    size_ = size;
  }
  auto done = c10::make_intrusive<FutureWork>(rank, c10d::OpType::UNKNOWN, "reconfigure", std::vector<at::Tensor>{});
  done->markSucceeded();
  return done;
}

c10::intrusive_ptr<ProcessGroupQCCL> ReconfigurableGroup::currentOrNull() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return group_;
}

c10::intrusive_ptr<ProcessGroupQCCL> ReconfigurableGroup::current() const {
  auto group = currentOrNull();
  QCCL_CHECK_VALUE(group, "this group was made with enable_reconfigure=True and has no members yet: "
                   "call dist._reconfigure(uuid, handles, group) first");
  return group;
}

// --- every call goes to current() ----------------------------------------------------------

WorkPtr ReconfigurableGroup::broadcast(std::vector<at::Tensor>& tensors, const c10d::BroadcastOptions& opts) {
  return current()->broadcast(tensors, opts);
}
WorkPtr ReconfigurableGroup::allreduce(std::vector<at::Tensor>& tensors, const c10d::AllreduceOptions& opts) {
  return current()->allreduce(tensors, opts);
}
WorkPtr ReconfigurableGroup::allreduce_coalesced(std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) {
  return current()->allreduce_coalesced(tensors, opts);
}
WorkPtr ReconfigurableGroup::reduce(std::vector<at::Tensor>& tensors, const c10d::ReduceOptions& opts) {
  return current()->reduce(tensors, opts);
}
WorkPtr ReconfigurableGroup::allgather(
    std::vector<std::vector<at::Tensor>>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return current()->allgather(outputs, inputs, opts);
}
WorkPtr ReconfigurableGroup::_allgather_base(at::Tensor& output, at::Tensor& input, const c10d::AllgatherOptions& opts) {
  return current()->_allgather_base(output, input, opts);
}
WorkPtr ReconfigurableGroup::allgather_coalesced(
    std::vector<std::vector<at::Tensor>>& outputLists,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return current()->allgather_coalesced(outputLists, inputs, opts);
}
WorkPtr ReconfigurableGroup::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return current()->allgather_into_tensor_coalesced(outputs, inputs, opts);
}
WorkPtr ReconfigurableGroup::gather(
    std::vector<std::vector<at::Tensor>>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::GatherOptions& opts) {
  return current()->gather(outputs, inputs, opts);
}
WorkPtr ReconfigurableGroup::scatter(
    std::vector<at::Tensor>& outputs,
    std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ScatterOptions& opts) {
  return current()->scatter(outputs, inputs, opts);
}
WorkPtr ReconfigurableGroup::reduce_scatter(
    std::vector<at::Tensor>& outputs,
    std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  return current()->reduce_scatter(outputs, inputs, opts);
}
WorkPtr ReconfigurableGroup::_reduce_scatter_base(at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) {
  return current()->_reduce_scatter_base(output, input, opts);
}
WorkPtr ReconfigurableGroup::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  return current()->reduce_scatter_tensor_coalesced(outputs, inputs, opts);
}
WorkPtr ReconfigurableGroup::alltoall_base(
    at::Tensor& output,
    at::Tensor& input,
    std::vector<int64_t>& outputSplits,
    std::vector<int64_t>& inputSplits,
    const c10d::AllToAllOptions& opts) {
  return current()->alltoall_base(output, input, outputSplits, inputSplits, opts);
}
WorkPtr ReconfigurableGroup::alltoall(
    std::vector<at::Tensor>& outputs,
    std::vector<at::Tensor>& inputs,
    const c10d::AllToAllOptions& opts) {
  return current()->alltoall(outputs, inputs, opts);
}
WorkPtr ReconfigurableGroup::barrier(const c10d::BarrierOptions& opts) {
  return current()->barrier(opts);
}
void ReconfigurableGroup::monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks) {
  current()->monitoredBarrier(opts, waitAllRanks);
}
WorkPtr ReconfigurableGroup::send(std::vector<at::Tensor>& tensors, int dstRank, int tag) {
  return current()->send(tensors, dstRank, tag);
}
WorkPtr ReconfigurableGroup::recv(std::vector<at::Tensor>& tensors, int srcRank, int tag) {
  return current()->recv(tensors, srcRank, tag);
}
WorkPtr ReconfigurableGroup::recvAnysource(std::vector<at::Tensor>& tensors, int tag) {
  return current()->recvAnysource(tensors, tag);
}
void ReconfigurableGroup::startCoalescing() {
  current()->startCoalescing();
}
WorkPtr ReconfigurableGroup::endCoalescing() {
  return current()->endCoalescing();
}
uint64_t ReconfigurableGroup::getSequenceNumberForGroup() {
  auto group = currentOrNull();
  return group ? group->getSequenceNumberForGroup() : 0;
}

// --- lifecycle: also before the first reconfigure ------------------------------------------

void ReconfigurableGroup::setTimeout(std::chrono::milliseconds timeout) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    timeout_ = timeout;
  }
  if (auto group = currentOrNull()) {
    group->setTimeout(timeout);
  }
}

c10d::ErrorType ReconfigurableGroup::getError() {
  auto group = currentOrNull();
  return group ? group->getError() : c10d::ErrorType::SUCCESS;
}

void ReconfigurableGroup::abort() {
  if (auto group = currentOrNull()) {
    group->abort();
  }
}

void ReconfigurableGroup::shutdown() {
  if (auto group = currentOrNull()) {
    group->shutdown();
  }
}

} // namespace qccl
