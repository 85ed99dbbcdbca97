#include "qccl/algo/deep_reduction.h"

#include <algorithm>
#include <vector>

#include "qccl/algo/chunk_steps.h"
#include "qccl/algo/gloo_ring_order.h"
#include "qccl/algo/local_allreduce.h"

namespace qccl::algo {
namespace {

// What one pairwise transfer carries at most. Small enough that a call's first transfers
// leave soon after it starts, large enough that the worker's cost per transfer is noise
// next to the bytes.
constexpr int64_t kPieceBytes = int64_t{512} << 10;

// One step of the pipeline: the piece of every owner that travels together. Owner r
// reduces the input's elements [begin[r], begin[r] + length[r]).
struct Step {
  std::vector<int64_t> begin;
  std::vector<int64_t> length;
  at::Tensor into;           // where this rank's reduced piece goes (bytes)
  at::Tensor contributions;  // every rank's part of this rank's piece, rank by rank
  std::vector<c10::intrusive_ptr<c10d::Work>> toOwners;  // receives, then sends
  std::vector<c10::intrusive_ptr<c10d::Work>> results;   // all_reduce: receives, then sends
};

class DeepPipeline {
 public:
  // `input` is flat; `returnResults`: every owner sends its reduced piece back to every
  // rank, into `input` (all_reduce).
  DeepPipeline(Transport& net, const at::Tensor& input, c10d::ReduceOp::RedOpType op, bool returnResults)
      : net_(net),
        inputBytes_(input.view(at::kByte)),
        type_(input.scalar_type()),
        op_(op),
        rank_(net.rank()),
        ranks_(net.size()),
        elementSize_(static_cast<int64_t>(input.element_size())),
        glooChunkElements_(glooAllreduceChunkElements(input.numel(), elementSize_, ranks_)),
        returnResults_(returnResults) {}

  // Posted before any peer sends: its contributions to this rank's piece, and (all_reduce)
  // the other owners' reduced pieces, straight into the input (they arrive only after
  // their owner has every rank's part, this rank's send of that piece included).
  void postReceives(Step& s) {
    const int64_t mine = s.length[rank_];
    s.contributions = emptyBytes(mine * elementSize_ * ranks_, inputBytes_);
    for (int r = 0; r < ranks_; ++r) {
      if (r == rank_) {
        continue;
      }
      if (mine > 0) {
        s.toOwners.push_back(net_.receiveBytes(contribution(s, r), r, kDeepReduceSlot));
      }
      if (returnResults_ && s.length[r] > 0) {
        s.results.push_back(net_.receiveBytes(piece(s, r), r, kDeepResultSlot));
      }
    }
  }

  // Each rank starts with the next one, so that no owner gets every rank's bytes first.
  void sendToOwners(Step& s) {
    for (int k = 1; k < ranks_; ++k) {
      const int r = (rank_ + k) % ranks_;
      if (s.length[r] > 0) {
        s.toOwners.push_back(net_.sendBytes(piece(s, r), r, kDeepReduceSlot));
      }
    }
  }

  // Reduces this rank's piece in Gloo's ring order; all_reduce sends it to every rank.
  void reduceOwnPiece(Step& s) {
    await(s.toOwners, "to the owners");
    if (s.length[rank_] == 0) {
      return;
    }
    contribution(s, rank_).copy_(piece(s, rank_));  // `into` may be this very piece
    std::vector<const uint8_t*> fromRank;
    for (int r = 0; r < ranks_; ++r) {
      fromRank.push_back(contribution(s, r).data_ptr<uint8_t>());
    }
    reduceInGlooOrder(
        op_, type_, s.into.data_ptr<uint8_t>(), s.begin[rank_], s.into.numel(), fromRank, glooChunkElements_);
    s.contributions.reset();
    if (returnResults_) {
      for (int k = 1; k < ranks_; ++k) {
        s.results.push_back(net_.sendBytes(s.into, (rank_ + k) % ranks_, kDeepResultSlot));
      }
    }
  }

  void awaitResults(Step& s) {
    await(s.results, "results");
  }

  // Owner r's piece of step `s` in the input.
  at::Tensor piece(const Step& s, int r) const {
    return inputBytes_.narrow(0, s.begin[r] * elementSize_, s.length[r] * elementSize_);
  }

 private:
  // Rank `r`'s part of this rank's piece of step `s`.
  at::Tensor contribution(const Step& s, int r) const {
    const int64_t bytes = s.length[rank_] * elementSize_;
    return s.contributions.narrow(0, r * bytes, bytes);
  }

  void await(std::vector<c10::intrusive_ptr<c10d::Work>>& works, const char* stage) {
    at::Tensor nothingSent;
    double seconds = 0;
    const std::string what = std::string(returnResults_ ? "all_reduce" : "reduce_scatter") + " (deep, " + stage + ")";
    awaitTransfers(net_, works, nothingSent, what.c_str(), seconds);
  }

  Transport& net_;
  const at::Tensor inputBytes_;
  const at::ScalarType type_;
  const c10d::ReduceOp::RedOpType op_;
  const int rank_;
  const int ranks_;
  const int64_t elementSize_;
  const int64_t glooChunkElements_;
  const bool returnResults_;
};

// Runs `steps` through `pipeline`: step i goes to its owners at step i, is reduced (and
// for all_reduce sent back) at step i + depth, and is complete at step i + 2 * depth; its
// receives are posted `depth` steps before it is sent. Every rank runs the same sequence,
// so the transfers of each (peer, slot) pair up in order.
void run(DeepPipeline& pipeline, std::vector<Step>& steps) {
  const auto count = static_cast<int64_t>(steps.size());
  const int64_t depth = kMaxChunksInFlight;
  runWithReceivesAhead(count, depth, [&](int64_t i) { pipeline.postReceives(steps[i]); }, {
      [&](int64_t i) { pipeline.sendToOwners(steps[i]); },
      [&](int64_t i) { pipeline.reduceOwnPiece(steps[i]); },
      [&](int64_t i) { pipeline.awaitResults(steps[i]); },
  });
}

int64_t pieceElements(const at::Tensor& t) {
  return std::max<int64_t>(1, kPieceBytes / static_cast<int64_t>(t.element_size()));
}

} // namespace

bool goesDeep(Transport& net, const at::Tensor& wire, c10d::ReduceOp::RedOpType op) {
  return net.size() > 1 && net.postsReceivesAhead() && wire.is_contiguous() &&
      wire.numel() * static_cast<int64_t>(wire.element_size()) >= kDeepReductionMinBytes &&
      reducesAsGloo(op, wire.scalar_type());
}

void deepAllreduce(Transport& net, at::Tensor& wire, c10d::ReduceOp::RedOpType op) {
  auto flat = wire.view({-1});
  const int ranks = net.size();
  // Each step is a run of the buffer cut into one piece per owner.
  const int64_t stepElements = pieceElements(flat) * ranks;
  DeepPipeline pipeline(net, flat, op, /*returnResults=*/true);
  std::vector<Step> steps;
  for (int64_t first = 0; first < flat.numel(); first += stepElements) {
    const int64_t count = std::min(stepElements, flat.numel() - first);
    const int64_t each = (count + ranks - 1) / ranks;
    Step s;
    for (int r = 0; r < ranks; ++r) {
      s.begin.push_back(first + std::min(count, r * each));
      s.length.push_back(std::min(count, (r + 1) * each) - std::min(count, r * each));
    }
    s.into = pipeline.piece(s, net.rank());
    steps.push_back(std::move(s));
  }
  run(pipeline, steps);
}

void deepReduceScatter(Transport& net, at::Tensor& output, const at::Tensor& input, c10d::ReduceOp::RedOpType op) {
  const auto flat = input.view({-1});
  const int ranks = net.size();
  const int64_t block = output.numel();
  const int64_t pieceLength = pieceElements(flat);
  auto outputBytes = output.view({-1}).view(at::kByte);
  const int64_t elementSize = static_cast<int64_t>(output.element_size());
  // Step i carries piece i of every rank's block.
  DeepPipeline pipeline(net, flat, op, /*returnResults=*/false);
  std::vector<Step> steps;
  for (int64_t offset = 0; offset < block; offset += pieceLength) {
    const int64_t length = std::min(pieceLength, block - offset);
    Step s;
    for (int r = 0; r < ranks; ++r) {
      s.begin.push_back(r * block + offset);
      s.length.push_back(length);
    }
    s.into = outputBytes.narrow(0, offset * elementSize, length * elementSize);
    steps.push_back(std::move(s));
  }
  run(pipeline, steps);
}

} // namespace qccl::algo
