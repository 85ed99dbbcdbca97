#include "qccl/algo/agreement.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/util/hash.h>

#include "qccl/algo/reduce_lowering.h"
#include "qccl/common/tensor_bytes.h"
#include "qccl/common/errors.h"

namespace qccl {
namespace {

// The record: kCallFields describing the call, then how qccl will run it (settings,
// plan), then whether the call failed on this rank, then the all-to-all sketch, then
// whether it starts a joint run (combined across ranks, not compared). The same size
// whatever the world size.
constexpr int64_t kCallFields = 6;
constexpr int64_t kRunFields = 8;
constexpr int64_t kFailedField = 8;
constexpr int64_t kSentSketchField = 9;
constexpr int64_t kReceivedSketchField = 10;
constexpr int64_t kStartsRunField = 11;
constexpr int64_t kRecordFields = 12;

// splitmix64's finalizer: a bijection on 64 bits whose every output bit depends on every
// input bit.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// One pair's term of the sketch: `bytes` going from rank `from` to rank `to`.
uint64_t pairTerm(int from, int to, int64_t bytes) {
  return mix(mix(mix(static_cast<uint64_t>(from) + 0x9e3779b97f4a7c15ULL) ^ static_cast<uint64_t>(to)) ^
             static_cast<uint64_t>(bytes));
}

int64_t asField(uint64_t bits) {
  int64_t field;
  std::memcpy(&field, &bits, sizeof field);
  return field;
}

std::vector<int64_t> encode(const OpSignature& s, int rank) {
  const auto sketch = sketchByteCounts(rank, s.sendBytes, s.recvBytes);
  return {static_cast<int64_t>(s.op), s.dtype, s.elements, s.reduceOp, s.root, s.layoutHash, s.settings, s.plan,
          s.failedHere ? 1 : 0, asField(sketch.sent), asField(sketch.received), s.startsRun ? 1 : 0};
}

std::string describe(const int64_t* r) {
  std::ostringstream out;
  out << c10d::opTypeToString(static_cast<c10d::OpType>(r[0]));
  if (r[1] >= 0) {
    out << " on " << r[2] << " " << c10::toString(static_cast<at::ScalarType>(r[1])) << " elements";
  } else {
    out << " on " << r[2] << " bytes (layout " << r[5] << ")";
  }
  if (r[3] >= 0) {
    out << " with ReduceOp." << reduceOpName(static_cast<c10d::ReduceOp::RedOpType>(r[3]));
  }
  if (r[4] >= 0) {
    out << " from/to root " << r[4];
  }
  return out.str();
}

} // namespace

ByteCountSketch sketchByteCounts(int rank, const std::vector<int64_t>& sendBytes, const std::vector<int64_t>& recvBytes) {
  ByteCountSketch sketch;
  for (size_t peer = 0; peer < sendBytes.size(); ++peer) {
    sketch.sent += pairTerm(rank, static_cast<int>(peer), sendBytes[peer]);
  }
  for (size_t peer = 0; peer < recvBytes.size(); ++peer) {
    sketch.received += pairTerm(static_cast<int>(peer), rank, recvBytes[peer]);
  }
  return sketch;
}

int64_t layoutHash(const std::vector<at::Tensor>& tensors) {
  size_t h = 0;
  for (const auto& t : tensors) {
    h = c10::hash_combine(h, static_cast<size_t>(t.scalar_type()));
    h = c10::hash_combine(h, static_cast<size_t>(t.numel()));
  }
  return static_cast<int64_t>(h & 0x7fffffffffffffffULL);
}

namespace {

// The records of one call on every rank: rank r's at at(r).
struct CallRecords {
  const int64_t* base;
  int64_t stride;
  const int64_t* at(int r) const {
    return base + r * stride;
  }
};

Disagreement mismatch(Disagreement::Kind kind, const std::string& prefix, const std::string& found) {
  return Disagreement{
      kind,
      prefix + "the ranks' arguments do not match; " + found +
          " (every rank must make the same collective calls with matching sizes)"};
}

std::string prefixFor(const std::string& opName, int me) {
  return opName + " on rank " + std::to_string(me) + ": ";
}

// Everything but the all-to-all byte counts, which need every rank's sketch
// (byteCountsAgree) and, when they disagree, the counts themselves (compareByteCounts).
std::optional<Disagreement> compareCall(const CallRecords& rec, int n, int me, const std::string& opName) {
  const std::string prefix = prefixFor(opName, me);
  using Kind = Disagreement::Kind;
  for (int r = 0; r < n; ++r) {
    if (rec.at(r)[kFailedField] != 0) {
      return Disagreement{
          Kind::FailedOnARank,
          prefix + "rank " + std::to_string(r) + " raised for this call before taking part (its own error says why), "
              "so no rank runs it"};
    }
  }
  const int64_t* first = rec.at(0);
  for (int r = 0; r < n; ++r) {
    const int64_t* mine = rec.at(r);
    if (std::equal(mine, mine + kCallFields, first) && !std::equal(mine, mine + kRunFields, first)) {
      return mismatch(
          Kind::Settings, prefix,
          "rank 0 and rank " + std::to_string(r) + " make the same call (" + describe(first) +
              ") but with different qccl settings (QCCL_* variables or qccl.Options) or "
              "one of them inside qccl.exact() and the other not");
    }
    if (!std::equal(mine, mine + kRunFields, first)) {
      return mismatch(Kind::Call, prefix, "rank 0 calls " + describe(first) + " but rank " + std::to_string(r) +
                                              " calls " + describe(mine));
    }
  }
  return std::nullopt;
}

bool byteCountsAgree(const CallRecords& rec, int n) {
  uint64_t sent = 0;
  uint64_t received = 0;
  for (int r = 0; r < n; ++r) {
    sent += static_cast<uint64_t>(rec.at(r)[kSentSketchField]);
    received += static_cast<uint64_t>(rec.at(r)[kReceivedSketchField]);
  }
  return sent == received;
}

// `counts(r)`: rank r's bytes sent to each peer, then received from each peer (2n).
template <typename Counts>
std::optional<Disagreement> compareByteCounts(const Counts& counts, int n, int me, const std::string& opName) {
  // What rank s sends to rank d must be what rank d expects from rank s.
  for (int s = 0; s < n; ++s) {
    for (int d = 0; d < n; ++d) {
      const int64_t sent = counts(s)[d];
      const int64_t expected = counts(d)[n + s];
      if (sent != expected) {
        return mismatch(
            Disagreement::Kind::Call, prefixFor(opName, me),
            "rank " + std::to_string(s) + " sends " + std::to_string(sent) + " bytes to rank " + std::to_string(d) +
                ", which expects " + std::to_string(expected) + " bytes from it");
      }
    }
  }
  return std::nullopt;  // the sketches collided; unreachable but with probability 2^-64
}

// The byte counts of the calls `which` from every rank, in a second exchange that every
// rank makes, since every rank saw the same sketches disagree: rank r's counts of
// which[j] at r * which.size() * 2n + j * 2n.
at::Tensor exchangeByteCounts(
    const ExchangeParts& exchange,
    int n,
    const std::vector<CallToCheck>& calls,
    const std::vector<int64_t>& which) {
  auto mine = at::full({static_cast<int64_t>(which.size()) * 2 * n}, -1, at::TensorOptions().dtype(at::kLong));
  int64_t* out = mine.data_ptr<int64_t>();
  for (size_t j = 0; j < which.size(); ++j) {
    const auto& signature = *calls[which[j]].signature;
    // Every rank passed the same op, an all-to-all, so these are n long; -1 if not.
    if (static_cast<int>(signature.sendBytes.size()) == n && static_cast<int>(signature.recvBytes.size()) == n) {
      std::copy(signature.sendBytes.begin(), signature.sendBytes.end(), out + j * 2 * n);
      std::copy(signature.recvBytes.begin(), signature.recvBytes.end(), out + j * 2 * n + n);
    }
  }
  return exchange(mine, calls[which[0]].opName + " (argument check, byte counts)");
}

} // namespace

int64_t ArgumentCheck::room() const {
  return *std::max_element(wanted_.begin(), wanted_.end());
}

CheckResult ArgumentCheck::compareAcrossRanks(
    int rank,
    int n,
    const std::vector<CallToCheck>& calls,
    const ExchangeParts& exchange) {
  const int64_t count = std::min<int64_t>(static_cast<int64_t>(calls.size()), kMaxCallsPerCheck);
  CheckResult result;
  if (n == 1) {
    result.verdicts.resize(count);
    for (int64_t i = 0; i < count; ++i) {
      result.startsRun.push_back(calls[i].signature->startsRun);
    }
    return result;
  }
  // Rank r's part: how many calls it checks, how many of them carry their contribution,
  // how many bytes of contributions it would carry given room, kMaxCallsPerCheck records
  // (unused ones zero), then the room for contributions, so every rank's part has the
  // same size whatever it has queued.
  const int64_t inlineBytes = room();
  const int64_t recordsAt = 3;
  const int64_t payloadAt = recordsAt + kMaxCallsPerCheck * kRecordFields;
  const int64_t part = payloadAt + inlineBytes / 8;
  auto options = at::TensorOptions().dtype(at::kLong);
  auto in = at::zeros({part}, options);
  int64_t* mine = in.data_ptr<int64_t>();
  mine[0] = count;
  for (int64_t i = 0; i < count; ++i) {
    const auto record = encode(*calls[i].signature, rank);
    std::copy(record.begin(), record.end(), mine + recordsAt + i * kRecordFields);
  }
  // Contributions of the leading calls that have one, each at an 8-byte boundary.
  auto payload = asBytes(in).narrow(0, payloadAt * 8, inlineBytes);
  int64_t packed = 0;
  int64_t used = 0;
  std::vector<int64_t> offsets;
  for (; packed < count && calls[packed].contribution.defined(); ++packed) {
    const auto& bytes = calls[packed].contribution;
    const int64_t padded = (bytes.numel() + 7) / 8 * 8;
    if (used + padded > inlineBytes) {
      break;
    }
    payload.narrow(0, used, bytes.numel()).copy_(bytes);
    offsets.push_back(used);
    used += padded;
  }
  mine[1] = packed;
  int64_t wanted = 0;  // what the leading contributions would take, within the most allowed
  for (int64_t i = 0; i < count && calls[i].contribution.defined(); ++i) {
    const int64_t padded = (calls[i].contribution.numel() + 7) / 8 * 8;
    if (wanted + padded > algo::inlineBytesPerCheck(n)) {
      break;
    }
    wanted += padded;
  }
  mine[2] = wanted;
  auto all = exchange(in, calls[0].opName + " (argument check)");

  const int64_t* parts = all.data_ptr<int64_t>();
  int64_t agreed = count;  // calls every rank has in this check
  int64_t inlined = packed;  // calls whose contribution every rank sent
  int64_t mostWanted = 0;
  for (int r = 0; r < n; ++r) {
    agreed = std::min(agreed, parts[r * part]);
    inlined = std::min(inlined, parts[r * part + 1]);
    mostWanted = std::max(mostWanted, parts[r * part + 2]);
  }
  wanted_[exchanges_++ % kRemembered] = mostWanted;
  std::vector<int64_t> countsDisagree;  // calls whose all-to-all sketches disagree
  for (int64_t i = 0; i < agreed; ++i) {
    const CallRecords records{parts + recordsAt + i * kRecordFields, part};
    result.verdicts.push_back(compareCall(records, n, rank, calls[i].opName));
    bool startsRun = false;
    for (int r = 0; r < n; ++r) {
      startsRun = startsRun || records.at(r)[kStartsRunField] != 0;
    }
    result.startsRun.push_back(startsRun);
    if (!result.verdicts.back() && !byteCountsAgree(records, n)) {
      countsDisagree.push_back(i);
    }
  }
  if (!countsDisagree.empty()) {
    const auto counts = exchangeByteCounts(exchange, n, calls, countsDisagree);
    const int64_t* byRank = counts.data_ptr<int64_t>();
    const int64_t perRank = static_cast<int64_t>(countsDisagree.size()) * 2 * n;
    for (size_t j = 0; j < countsDisagree.size(); ++j) {
      const auto countsOf = [&](int r) { return byRank + r * perRank + static_cast<int64_t>(j) * 2 * n; };
      const int64_t i = countsDisagree[j];
      result.verdicts[i] = compareByteCounts(countsOf, n, rank, calls[i].opName);
    }
  }
  // Ranks that agree on every call so far packed the same sizes in the same places.
  auto allBytes = asBytes(all);
  for (int64_t i = 0; i < std::min(agreed, inlined) && !result.verdicts[i]; ++i) {
    std::vector<at::Tensor> contributions;
    for (int r = 0; r < n; ++r) {
      contributions.push_back(allBytes.narrow(0, (r * part + payloadAt) * 8 + offsets[i], calls[i].contribution.numel()));
    }
    result.contributions.push_back(std::move(contributions));
  }
  return result;
}

} // namespace qccl
