#include "qccl/algo/one_host.h"

#include <algorithm>
#include <cstring>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include "qccl/algo/gloo_ring_order.h"
#include "qccl/common/errors.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl::algo {
namespace {

// Chunks start at multiples of this, so no element (complex128 is the widest) is split.
constexpr int64_t kWidestElement = 16;

bool everyRank(int) {
  return true;
}

// From this size on, an all-reduce among more than two ranks spreads its reductions: each
// rank reduces one share of every chunk and the ranks then gather the shares. One-shot,
// every rank reads every contribution; spread, each reads one share of each plus the
// others' results: about 4 chunk lengths of memory traffic per rank instead of size + 2.
// Two ranks would gain nothing and pay a second round per chunk.
constexpr int64_t kSpreadReductionBytes = 1 << 20;

// Copies the part of [offset, offset + length) that falls in [from, from + block) of a
// contribution at `data` to `into` (which holds that block).
void copyOverlap(uint8_t* into, int64_t from, int64_t block, const uint8_t* data, int64_t offset, int64_t length) {
  const int64_t start = std::max(offset, from);
  const int64_t end = std::min(offset + length, from + block);
  if (start < end) {
    std::memcpy(into + (start - from), data + (start - offset), static_cast<size_t>(end - start));
  }
}

} // namespace

OneHost::OneHost(std::unique_ptr<shm::Channel> channel)
    : channel_(std::move(channel)),
      backend_(c10::make_intrusive<OneHostBackend>(*this)),
      chunkBytes_(static_cast<int64_t>(channel_->slotBytes()) / kWidestElement * kWidestElement) {
  TORCH_INTERNAL_ASSERT(chunkBytes_ > 0, "qccl: a shared-memory slot smaller than one element");
}

void OneHost::named(const char* what, const std::function<void()>& body) {
  try {
    body();
  } catch (const c10::DistBackendError&) {
    throwCommError(std::string(what) + " on rank " + std::to_string(rank()) + " over shared memory failed: " +
                   describeCause(std::current_exception()));
  }
}

void OneHost::rounds(
    const char* what,
    int64_t bytes,
    const uint8_t* mine,
    const std::function<bool(int)>& contributes,
    const Take& take) {
  named(what, [&] { runRounds(bytes, mine, bytes, contributes, take); });
}

void OneHost::unevenRounds(const char* what, int64_t span, const uint8_t* mine, int64_t myBytes, const Take& take) {
  named(what, [&] { runRounds(span, mine, myBytes, everyRank, take); });
}

void OneHost::runRounds(
    int64_t span,
    const uint8_t* mine,
    int64_t myBytes,
    const std::function<bool(int)>& contributes,
    const Take& take) {
  const int64_t offered = contributes(rank()) ? myBytes : 0;
  std::vector<const uint8_t*> fromRank(size());
  int64_t offset = 0;
  do {  // a call of 0 bytes still runs one round: every rank takes part
    const int64_t length = std::min(chunkBytes_, span - offset);
    const int64_t ownLength = std::clamp<int64_t>(offered - offset, 0, length);
    const uint64_t round = ++round_;
    if (ownLength > 0) {
      std::memcpy(channel_->beginWrite(round), mine + offset, static_cast<size_t>(ownLength));
    }
    channel_->publish(round, static_cast<uint64_t>(ownLength));
    for (int peer = 0; peer < size(); ++peer) {
      fromRank[peer] = contributes(peer) ? channel_->awaitPeer(peer, round) : nullptr;
    }
    take(offset, fromRank, length);
    channel_->finish(round);
    offset += length;
  } while (offset < span);
}

void OneHost::allreduce(at::Tensor& tensor, const c10d::ReduceOp& op) {
  const auto lowered = lowerReduction(op, tensor.scalar_type(), "all_reduce");
  auto wire = toWire(lowered, tensor).contiguous();
  allreduceWire(wire, lowered.wireOp, "all_reduce");
  fromWire(lowered, wire, tensor, size());
}

void OneHost::allreduceWire(at::Tensor& wire, c10d::ReduceOp::RedOpType wireOp, const char* what) {
  const int64_t elementSize = static_cast<int64_t>(wire.element_size());
  const int64_t chunkElements = glooAllreduceChunkElements(wire.numel(), elementSize, size());
  // The wire tensor is this rank's contribution until its bytes are in its slot, then the
  // result: each chunk is overwritten only after the round published it.
  auto* acc = mutableBytePointer(wire);
  if (size() > 2 && byteSize(wire) >= kSpreadReductionBytes) {
    allreduceSpread(wire, wireOp, chunkElements, what);
    return;
  }
  rounds(what, byteSize(wire), acc, everyRank, [&](int64_t offset, const auto& fromRank, int64_t length) {
    reduceInGlooOrder(wireOp, wire.scalar_type(), acc + offset, offset / elementSize, length, fromRank, chunkElements);
  });
}

void OneHost::allreduceSpread(
    at::Tensor& wire,
    c10d::ReduceOp::RedOpType wireOp,
    int64_t chunkElements,
    const char* what) {
  const int64_t elementSize = static_cast<int64_t>(wire.element_size());
  auto* acc = mutableBytePointer(wire);
  const int64_t total = byteSize(wire);
  named(what, [&] {
    for (int64_t offset = 0; offset < total; offset += chunkBytes_) {
      const int64_t length = std::min(chunkBytes_, total - offset);
      // Rank r's share of the chunk: the r-th of size() runs of whole elements.
      const int64_t elements = length / elementSize;
      auto shareStart = [&](int r) { return elements * r / size() * elementSize; };
      const int64_t myStart = shareStart(rank());
      const int64_t myLength = shareStart(rank() + 1) - myStart;
      int64_t longestShare = 0;
      for (int r = 0; r < size(); ++r) {
        longestShare = std::max(longestShare, shareStart(r + 1) - shareStart(r));
      }
      // Round one: every rank's contribution; this rank reduces its share of it (its own
      // copy is in its slot, so the share of `acc` can take the result).
      runRounds(length, acc + offset, length, everyRank, [&](int64_t, const auto& fromRank, int64_t) {
        std::vector<const uint8_t*> share;
        for (const auto* data : fromRank) {
          share.push_back(data + myStart);
        }
        reduceInGlooOrder(wireOp, wire.scalar_type(), acc + offset + myStart, (offset + myStart) / elementSize,
                          myLength, share, chunkElements);
      });
      // Round two: every rank's reduced share, copied into place.
      runRounds(longestShare, acc + offset + myStart, myLength, everyRank, [&](int64_t, const auto& fromRank, int64_t) {
        for (int peer = 0; peer < size(); ++peer) {
          if (peer != rank()) {
            std::memcpy(acc + offset + shareStart(peer), fromRank[peer],
                        static_cast<size_t>(shareStart(peer + 1) - shareStart(peer)));
          }
        }
      });
    }
  });
}

void OneHost::reduce(at::Tensor& tensor, const c10d::ReduceOp& op, int64_t root) {
  const auto lowered = lowerReduction(op, tensor.scalar_type(), "reduce");
  const bool isRoot = rank() == root;
  auto wire = toWire(lowered, tensor).contiguous();
  const int64_t elementSize = static_cast<int64_t>(wire.element_size());
  const int64_t chunkElements = glooReduceChunkElements(wire.numel(), elementSize, size());
  auto* acc = mutableBytePointer(wire);
  rounds("reduce", byteSize(wire), acc, everyRank, [&](int64_t offset, const auto& fromRank, int64_t length) {
    if (isRoot) {  // the others only contribute: their tensors stay as they were
      reduceInGlooOrder(lowered.wireOp, lowered.wireType, acc + offset, offset / elementSize, length, fromRank, chunkElements);
    }
  });
  if (isRoot) {
    fromWire(lowered, wire, tensor, size());
  }
}

void OneHost::reduceScatterTensor(at::Tensor& output, const at::Tensor& input, const c10d::ReduceOp& op) {
  const auto lowered = lowerReduction(op, input.scalar_type(), "reduce_scatter");
  const auto wireIn = toWire(lowered, input.contiguous()).contiguous();
  auto wireOut = at::empty({wireIn.numel() / size()}, wireIn.options());
  const int64_t elementSize = static_cast<int64_t>(wireIn.element_size());
  // Gloo all-reduces the whole input and keeps this rank's block: the whole input's order.
  const int64_t chunkElements = glooAllreduceChunkElements(wireIn.numel(), elementSize, size());
  const int64_t block = byteSize(wireOut);
  const int64_t mineFrom = rank() * block;
  auto* out = mutableBytePointer(wireOut);
  // Every rank offers its whole input; each reduces only its own block of each chunk.
  rounds("reduce_scatter", byteSize(wireIn), bytePointer(wireIn), everyRank, [&](int64_t offset, const auto& fromRank, int64_t length) {
    const int64_t start = std::max(offset, mineFrom);
    const int64_t end = std::min(offset + length, mineFrom + block);
    if (start >= end) {
      return;
    }
    std::vector<const uint8_t*> overlap;
    for (const auto* data : fromRank) {
      overlap.push_back(data + (start - offset));
    }
    reduceInGlooOrder(lowered.wireOp, lowered.wireType, out + (start - mineFrom), start / elementSize, end - start, overlap, chunkElements);
  });
  fromWire(lowered, wireOut, output, size());
}

void OneHost::broadcast(at::Tensor& tensor, int64_t root) {
  auto bytes = asBytes(tensor.contiguous());
  auto* out = mutableBytePointer(bytes);
  const bool isRoot = rank() == root;
  rounds(
      "broadcast", bytes.numel(), out, [root](int peer) { return peer == root; },
      [&](int64_t offset, const auto& fromRank, int64_t length) {
        if (!isRoot) {
          std::memcpy(out + offset, fromRank[root], static_cast<size_t>(length));
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
  auto* out = mutableBytePointer(gathered);
  rounds("all_gather", block, bytePointer(in), everyRank, [&](int64_t offset, const auto& fromRank, int64_t length) {
    for (int peer = 0; peer < size(); ++peer) {
      std::memcpy(out + peer * block + offset, fromRank[peer], static_cast<size_t>(length));
    }
  });
  if (!gathered.is_same(output)) {
    output.copy_(gathered);
  }
}

void OneHost::gather(std::vector<at::Tensor>& outputs, const at::Tensor& input, int64_t root) {
  const auto in = asBytes(input.contiguous());
  std::vector<at::Tensor> targets;  // contiguous byte views of the root's outputs
  for (auto& output : outputs) {
    targets.push_back(output.is_contiguous() ? asBytes(output) : at::empty({in.numel()}, in.options()));
  }
  rounds("gather", in.numel(), bytePointer(in), everyRank, [&](int64_t offset, const auto& fromRank, int64_t length) {
    for (size_t peer = 0; peer < targets.size(); ++peer) {  // none but on the root
      std::memcpy(mutableBytePointer(targets[peer]) + offset, fromRank[peer], static_cast<size_t>(length));
    }
  });
  for (size_t r = 0; r < targets.size(); ++r) {
    if (!targets[r].is_alias_of(outputs[r])) {
      asBytes(outputs[r]).copy_(targets[r]);
    }
  }
}

void OneHost::scatter(at::Tensor& output, const std::vector<at::Tensor>& inputs, int64_t root) {
  auto out = asBytes(output.contiguous());
  const int64_t block = out.numel();
  const bool isRoot = rank() == root;
  // The root offers every rank's block, in rank order; each rank copies its own.
  const auto offered = isRoot ? concatBytes(inputs) : at::Tensor();
  rounds(
      "scatter", block * size(), isRoot ? bytePointer(offered) : nullptr, [root](int peer) { return peer == root; },
      [&](int64_t offset, const auto& fromRank, int64_t length) {
        copyOverlap(mutableBytePointer(out), rank() * block, block, fromRank[root], offset, length);
      });
  if (!out.is_alias_of(output)) {
    asBytes(output).copy_(out);
  }
}

void OneHost::allToAll(
    at::Tensor& output,
    const std::vector<int64_t>& recvBytes,
    const at::Tensor& input,
    const std::vector<int64_t>& sendBytes) {
  // Every rank's sizes first (one small round), so every rank knows where its block sits
  // in each peer's input and how many rounds the longest input needs.
  std::vector<int64_t> sizes(sendBytes);
  sizes.insert(sizes.end(), recvBytes.begin(), recvBytes.end());
  const auto everyRanksSizes = exchange(
      at::from_blob(sizes.data(), {static_cast<int64_t>(sizes.size())}, at::TensorOptions().dtype(at::kLong)),
      "all_to_all");
  const int64_t* all = everyRanksSizes.const_data_ptr<int64_t>();
  const int n = size();
  auto sends = [&](int from, int to) { return all[from * 2 * n + to]; };
  auto expects = [&](int at, int from) { return all[at * 2 * n + n + from]; };
  int64_t span = 0;
  for (int from = 0; from < n; ++from) {
    int64_t total = 0;
    for (int to = 0; to < n; ++to) {
      // Every rank sees every pair, so every rank raises alike and the channel stays in step.
      QCCL_CHECK_VALUE(
          sends(from, to) == expects(to, from), "all_to_all: rank ", from, " sends ", sends(from, to),
          " bytes to rank ", to, ", which expects ", expects(to, from), " bytes from it");
      total += sends(from, to);
    }
    span = std::max(span, total);
  }
  auto* out = mutableBytePointer(output);
  std::vector<int64_t> blockStart(n, 0);  // where this rank's block sits in each peer's input
  std::vector<int64_t> outStart(n, 0);    // where each peer's block goes in the output
  for (int from = 0; from < n; ++from) {
    for (int to = 0; to < rank(); ++to) {
      blockStart[from] += sends(from, to);
    }
    if (from > 0) {
      outStart[from] = outStart[from - 1] + recvBytes[from - 1];
    }
  }
  unevenRounds("all_to_all", span, bytePointer(input), byteSize(input), [&](int64_t offset, const auto& fromRank, int64_t length) {
    for (int from = 0; from < n; ++from) {
      copyOverlap(out + outStart[from], blockStart[from], recvBytes[from], fromRank[from], offset, length);
    }
  });
}

void OneHost::barrier() {
  rounds("barrier", 0, nullptr, everyRank, [](int64_t, const auto&, int64_t) {});
}

at::Tensor OneHost::exchange(const at::Tensor& mine, const std::string& what, std::vector<int64_t>* waitedNs) {
  std::vector<int64_t> blockedBefore(size());
  for (int peer = 0; waitedNs && peer < size(); ++peer) {
    blockedBefore[peer] = channel_->blockedNanoseconds(peer);
  }
  const auto in = asBytes(mine.contiguous());
  const int64_t part = in.numel();
  auto all = at::empty({size() * part}, in.options());
  auto* out = mutableBytePointer(all);
  rounds(what.c_str(), part, bytePointer(in), everyRank, [&](int64_t offset, const auto& fromRank, int64_t length) {
    for (int peer = 0; peer < size(); ++peer) {
      std::memcpy(out + peer * part + offset, fromRank[peer], static_cast<size_t>(length));
    }
  });
  for (int peer = 0; waitedNs && peer < size(); ++peer) {
    (*waitedNs)[peer] += channel_->blockedNanoseconds(peer) - blockedBefore[peer];
  }
  return all.view(mine.scalar_type());
}

void OneHost::abort(const std::string& why) {
  channel_->abort(why);
}

void OneHost::setTimeout(std::chrono::milliseconds timeout) {
  channel_->setTimeout(timeout);
}

} // namespace qccl::algo
