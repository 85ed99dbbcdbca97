#pragma once

// Cross-rank argument check. Gloo trusts every rank to pass matching sizes; when they
// differ, its network thread hits an enforce and the whole process aborts. So before
// collectives run, every rank sends every peer small records describing them (op, dtype,
// element count, reduce op, root, a sketch of the all-to-all byte counts), of the same
// size whatever the world size, and raises a clear error on every rank when the records
// disagree. One exchange checks every call queued at that moment (up to
// kMaxCallsPerCheck), so a burst of async calls pays about one exchange, not one per
// call, and the exchange takes one network hop at any world size; QCCL_VERIFY=0 turns it
// off (see docs/errors.md and docs/design.md).
//
// A call that failed qccl's own argument checks on one rank still sends its record,
// marked as failed there, so that its peers raise for the same call instead of pairing
// their call with that rank's next one (docs/errors.md, "Staying in step").

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Work.hpp>

#include "qccl/algo/carried_call.h"

namespace qccl {

struct OpSignature {
  c10d::OpType op = c10d::OpType::UNKNOWN;
  int64_t dtype = -1;       // at::ScalarType, or -1 when not one dtype
  int64_t elements = 0;     // this rank's contribution (elements, or bytes for lists)
  int64_t reduceOp = -1;    // c10d::ReduceOp::RedOpType, or -1
  int64_t root = -1;        // root rank, or -1
  int64_t layoutHash = 0;   // lists of tensors: a hash of every dtype and size
  int64_t settings = 0;     // Config::fingerprint(): the group's qccl settings
  int64_t plan = 0;         // allreduce: a hash of how each tensor is routed (exact or compressed)
  bool failedHere = false;  // this rank raised for the call before taking part
  // The call cannot run together with the calls before it on this rank (see
  // backend/joint_allreduce.h). Not compared: the ranks combine it (CheckResult).
  bool startsRun = false;
  // all_to_all: bytes this rank sends to / receives from each peer; empty otherwise.
  // Only their sketch (below) travels, unless the ranks' sketches disagree.
  std::vector<int64_t> sendBytes;
  std::vector<int64_t> recvBytes;
};

// The all-to-all byte counts of one rank as two numbers every rank can sum: `sent` is
// the sum over peers d of h(rank, d, sendBytes[d]), `received` the sum over peers s of
// h(s, rank, recvBytes[s]), modulo 2^64, h a 64-bit mix. Summed over the ranks, both
// add up h(s, d, bytes) over every pair s -> d: the sums are equal when every rank
// receives from each peer what that peer sends it, and differ (but with probability
// 2^-64) when any pair disagrees, even where every rank's own totals balance.
struct ByteCountSketch {
  uint64_t sent = 0;
  uint64_t received = 0;
};
ByteCountSketch sketchByteCounts(int rank, const std::vector<int64_t>& sendBytes, const std::vector<int64_t>& recvBytes);

// How the ranks' records of one call disagree.
struct Disagreement {
  enum class Kind {
    FailedOnARank,  // a rank raised for this call already: every rank skips it, in step
    Settings,       // the same call, run differently (settings, qccl.exact()): in step
    Call,           // different calls or sizes: a rank may have skipped a call (below)
  };
  Kind kind;
  std::string message;  // "<op> on rank <r>: ..."
};

// At most this many queued calls are checked in one exchange.
constexpr int64_t kMaxCallsPerCheck = 16;

struct CallToCheck {
  std::string opName;
  const OpSignature* signature;
  // A small call's contribution (algo/carried_call.h) as bytes, carried with
  // its record; undefined for other calls.
  at::Tensor contribution;
};

struct CheckResult {
  // One per compared call (nothing: the ranks agree), the same on every rank.
  std::vector<std::optional<Disagreement>> verdicts;
  // For the first calls: every rank's contribution, in rank order, when every rank
  // carried its contribution and the ranks agree on this call and all before it.
  std::vector<std::vector<at::Tensor>> contributions;
  // One per compared call: whether any rank's record says it starts a run, so every rank
  // splits its calls into the same runs.
  std::vector<bool> startsRun;
};

// Sends this rank's part (the same size on every rank) to every peer and returns every
// rank's, in rank order, naming `what` if it fails: backend/check_exchange.h.
using ExchangeParts = std::function<at::Tensor(const at::Tensor& mine, const std::string& what)>;

// One group's check; one instance per group, used by its worker only.
class ArgumentCheck {
 public:
  // Compares the records of this rank's next calls (`calls`, oldest first) with every
  // other rank's, in one exchange, however many each rank has queued: ranks may have
  // queued different numbers of calls, so only the first m calls, m the fewest any rank
  // sent (at most kMaxCallsPerCheck), are compared; the rest wait for the next exchange.
  // Small all_reduces at the head of `calls` carry their contributions in the same
  // exchange when they fit its room (below), so they need no exchange of their own.
  // When the all-to-all sketches of a call disagree, a second exchange (which every rank
  // decides on from the same records) fetches that call's byte counts, so the error names
  // the pair of ranks that disagree. A Call disagreement cannot tell a mistaken argument
  // from a rank that skipped a collective (an error raised before it reached qccl), after
  // which every later call would pair with the wrong one; the caller treats it so.
  CheckResult compareAcrossRanks(int rank, int size, const std::vector<CallToCheck>& calls, const ExchangeParts& exchange);

 private:
  // The room for contributions in each rank's part is the most bytes any rank wanted to
  // carry in any of the last kRemembered exchanges (at most algo::inlineBytesPerCheck):
  // every rank sees every part, so every rank sizes its next part alike, and calls that
  // carry nothing do not pay for room they leave empty (docs/design.md). A small
  // all_reduce that finds no room runs on its own and makes room for the next one.
  static constexpr size_t kRemembered = 32;
  int64_t room() const;
  std::array<int64_t, kRemembered> wanted_{};
  size_t exchanges_ = 0;
};

// Hash of the dtypes and sizes of `tensors`, equal on ranks that pass equal layouts.
int64_t layoutHash(const std::vector<at::Tensor>& tensors);

} // namespace qccl
