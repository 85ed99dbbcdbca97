#include "qccl/algo/one_host.h"

#include <algorithm>
#include <cstring>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include "qccl/algo/reduce_lowering.h"
#include "qccl/common/errors.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl::algo {
namespace {

// Chunks start at multiples of this, so no element (complex128 is the widest) is split.
constexpr int64_t kWidestElement = 16;

const uint8_t* bytesOf(const at::Tensor& contiguous) {
  return static_cast<const uint8_t*>(contiguous.const_data_ptr());
}

// `length` bytes at `data`, read as elements of `dtype` (no copy).
at::Tensor viewOf(const uint8_t* data, int64_t length, at::ScalarType dtype) {
  return at::from_blob(
      const_cast<uint8_t*>(data), {length / static_cast<int64_t>(c10::elementSize(dtype))},
      at::TensorOptions().dtype(dtype));
}

bool everyRank(int) {
  return true;
}

} // namespace

OneHost::OneHost(std::unique_ptr<shm::Channel> channel)
    : channel_(std::move(channel)),
      chunkBytes_(static_cast<int64_t>(channel_->slotBytes()) / kWidestElement * kWidestElement) {
  TORCH_INTERNAL_ASSERT(chunkBytes_ > 0, "qccl: a shared-memory slot smaller than one element");
}

void OneHost::rounds(
    const char* what,
    int64_t bytes,
    const uint8_t* mine,
    const std::function<bool(int)>& contributes,
    const Take& take) {
  try {
    runRounds(bytes, mine, contributes, take);
  } catch (const c10::DistBackendError&) {
    auto why = describeException(std::current_exception());
    const std::string prefix = "qccl: ";
    if (why.rfind(prefix, 0) == 0) {
      why = why.substr(prefix.size());
    }
    throwCommError(std::string(what) + " on rank " + std::to_string(rank()) + " over shared memory failed: " + why);
  }
}

void OneHost::runRounds(
    int64_t bytes,
    const uint8_t* mine,
    const std::function<bool(int)>& contributes,
    const Take& take) {
  const bool contributing = contributes(rank());
  int64_t offset = 0;
  do {  // a call of 0 bytes still runs one round: every rank takes part
    const int64_t length = std::min(chunkBytes_, bytes - offset);
    const uint64_t round = ++round_;
    if (contributing && length > 0) {
      std::memcpy(channel_->beginWrite(round), mine + offset, static_cast<size_t>(length));
    }
    channel_->publish(round, contributing ? static_cast<uint64_t>(length) : 0);
    for (int peer = 0; peer < size(); ++peer) {
      if (contributes(peer)) {
        take(peer, offset, channel_->awaitPeer(peer, round), length);
      }
    }
    channel_->finish(round);
    offset += length;
  } while (offset < bytes);
}

void OneHost::allreduce(at::Tensor& tensor, const c10d::ReduceOp& op) {
  const auto lowered = lowerReduction(op, tensor.scalar_type(), "all_reduce");
  // The wire tensor is this rank's contribution until its bytes are in its slot, then the
  // accumulator: each chunk is overwritten only after the round published it.
  auto wire = toWire(lowered, tensor).contiguous();
  auto* acc = static_cast<uint8_t*>(wire.mutable_data_ptr());
  rounds("all_reduce", byteSize(wire), acc, everyRank, [&](int peer, int64_t offset, const uint8_t* data, int64_t length) {
    auto into = viewOf(acc + offset, length, lowered.wireType);
    if (peer == 0) {
      into.copy_(viewOf(data, length, lowered.wireType));
    } else {
      reduceInto(lowered.wireOp, into, viewOf(data, length, lowered.wireType));
    }
  });
  fromWire(lowered, wire, tensor, size());
}

void OneHost::reduce(at::Tensor& tensor, const c10d::ReduceOp& op, int64_t root) {
  const auto lowered = lowerReduction(op, tensor.scalar_type(), "reduce");
  const bool isRoot = rank() == root;
  auto wire = toWire(lowered, tensor).contiguous();
  auto* acc = static_cast<uint8_t*>(wire.mutable_data_ptr());
  rounds("reduce", byteSize(wire), acc, everyRank, [&](int peer, int64_t offset, const uint8_t* data, int64_t length) {
    if (!isRoot) {
      return;  // contributes only: its own tensor stays as it was
    }
    auto into = viewOf(acc + offset, length, lowered.wireType);
    if (peer == 0) {
      into.copy_(viewOf(data, length, lowered.wireType));
    } else {
      reduceInto(lowered.wireOp, into, viewOf(data, length, lowered.wireType));
    }
  });
  if (isRoot) {
    fromWire(lowered, wire, tensor, size());
  }
}

void OneHost::broadcast(at::Tensor& tensor, int64_t root) {
  auto bytes = asBytes(tensor.contiguous());
  auto* out = static_cast<uint8_t*>(bytes.mutable_data_ptr());
  const bool isRoot = rank() == root;
  rounds(
      "broadcast", bytes.numel(), out, [root](int peer) { return peer == root; },
      [&](int, int64_t offset, const uint8_t* data, int64_t length) {
        if (!isRoot) {
          std::memcpy(out + offset, data, static_cast<size_t>(length));
        }
      });
  if (!bytes.is_alias_of(tensor)) {
    asBytes(tensor).copy_(bytes);
  }
}

void OneHost::allgatherIntoTensor(at::Tensor& output, const at::Tensor& input) {
  const auto in = input.contiguous();
  const int64_t block = byteSize(in);
  auto gathered = output.is_contiguous() ? output : at::empty(output.sizes(), output.options());
  auto* out = static_cast<uint8_t*>(gathered.mutable_data_ptr());
  rounds("all_gather", block, bytesOf(in), everyRank, [&](int peer, int64_t offset, const uint8_t* data, int64_t length) {
    std::memcpy(out + peer * block + offset, data, static_cast<size_t>(length));
  });
  if (!gathered.is_same(output)) {
    output.copy_(gathered);
  }
}

void OneHost::reduceScatterTensor(at::Tensor& output, const at::Tensor& input, const c10d::ReduceOp& op) {
  const auto lowered = lowerReduction(op, input.scalar_type(), "reduce_scatter");
  const auto wireIn = toWire(lowered, input.contiguous()).contiguous();
  auto wireOut = at::empty({wireIn.numel() / size()}, wireIn.options());
  const int64_t block = byteSize(wireOut);
  const int64_t mineFrom = rank() * block;
  auto* acc = static_cast<uint8_t*>(wireOut.mutable_data_ptr());
  // Every rank offers its whole input; each reduces only its own block of each chunk.
  rounds("reduce_scatter", byteSize(wireIn), bytesOf(wireIn), everyRank, [&](int peer, int64_t offset, const uint8_t* data, int64_t length) {
    const int64_t from = std::max(offset, mineFrom);
    const int64_t to = std::min(offset + length, mineFrom + block);
    if (from >= to) {
      return;
    }
    auto into = viewOf(acc + (from - mineFrom), to - from, lowered.wireType);
    auto next = viewOf(data + (from - offset), to - from, lowered.wireType);
    if (peer == 0) {
      into.copy_(next);
    } else {
      reduceInto(lowered.wireOp, into, next);
    }
  });
  fromWire(lowered, wireOut, output, size());
}

void OneHost::barrier() {
  rounds("barrier", 0, nullptr, everyRank, [](int, int64_t, const uint8_t*, int64_t) {});
}

at::Tensor OneHost::exchange(const at::Tensor& mine, const std::string& what) {
  const auto in = asBytes(mine.contiguous());
  const int64_t part = in.numel();
  auto all = at::empty({size() * part}, in.options());
  auto* out = static_cast<uint8_t*>(all.mutable_data_ptr());
  rounds(what.c_str(), part, bytesOf(in), everyRank, [&](int peer, int64_t offset, const uint8_t* data, int64_t length) {
    std::memcpy(out + peer * part + offset, data, static_cast<size_t>(length));
  });
  return all.view(mine.scalar_type());
}

void OneHost::abort() {
  channel_->abort();
}

void OneHost::setTimeout(std::chrono::milliseconds timeout) {
  channel_->setTimeout(timeout);
}

} // namespace qccl::algo
