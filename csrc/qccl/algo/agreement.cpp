#include "qccl/algo/agreement.h"

#include <algorithm>
#include <sstream>

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/hash.h>

#include "qccl/algo/reduce_lowering.h"
#include "qccl/common/tensor_bytes.h"
#include "qccl/common/errors.h"

namespace qccl {
namespace {

// The record: kCallFields describing the call, then how qccl will run it (settings,
// plan), then whether the call failed on this rank, then the all-to-all byte counts.
constexpr int64_t kCallFields = 6;
constexpr int64_t kRunFields = 8;
constexpr int64_t kFailedField = 8;
constexpr int64_t kHeaderFields = 9;

std::vector<int64_t> encode(const OpSignature& s, int worldSize) {
  std::vector<int64_t> record = {
      static_cast<int64_t>(s.op), s.dtype, s.elements, s.reduceOp, s.root, s.layoutHash, s.settings, s.plan,
      s.failedHere ? 1 : 0};
  // Fixed length on every rank, all-to-all or not, so the check itself always matches.
  for (int peer = 0; peer < worldSize; ++peer) {
    record.push_back(s.sendBytes.empty() ? -1 : s.sendBytes[peer]);
  }
  for (int peer = 0; peer < worldSize; ++peer) {
    record.push_back(s.recvBytes.empty() ? -1 : s.recvBytes[peer]);
  }
  return record;
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

std::optional<Disagreement> compareCall(const CallRecords& rec, int n, int me, const std::string& opName) {
  const std::string prefix = opName + " on rank " + std::to_string(me) + ": ";
  using Kind = Disagreement::Kind;
  for (int r = 0; r < n; ++r) {
    if (rec.at(r)[kFailedField] != 0) {
      return Disagreement{
          Kind::FailedOnARank,
          prefix + "rank " + std::to_string(r) + " raised for this call before taking part (its own error says why), "
              "so no rank runs it"};
    }
  }
  std::ostringstream problems;
  Kind kind = Kind::Call;
  for (int r = 0; r < n; ++r) {
    const int64_t* mine = rec.at(r);
    const int64_t* first = rec.at(0);
    if (std::equal(mine, mine + kCallFields, first) && !std::equal(mine, mine + kRunFields, first)) {
      problems << "; rank 0 and rank " << r << " make the same call (" << describe(first)
               << ") but with different qccl settings (QCCL_* variables or qccl.Options) or "
                  "one of them inside qccl.exact() and the other not";
      kind = Kind::Settings;
      break;
    }
    if (!std::equal(mine, mine + kRunFields, first)) {
      problems << "; rank 0 calls " << describe(first) << " but rank " << r << " calls " << describe(mine);
      break;
    }
  }
  // all-to-all: what rank s sends to rank d must be what rank d expects from rank s.
  for (int s = 0; s < n && problems.tellp() == 0; ++s) {
    for (int d = 0; d < n; ++d) {
      const int64_t sent = rec.at(s)[kHeaderFields + d];
      const int64_t expected = rec.at(d)[kHeaderFields + n + s];
      if (sent != expected) {
        problems << "; rank " << s << " sends " << sent << " bytes to rank " << d
                 << ", which expects " << expected << " bytes from it";
        break;
      }
    }
  }
  const std::string found = problems.str();
  if (found.empty()) {
    return std::nullopt;
  }
  return Disagreement{
      kind,
      prefix + "the ranks' arguments do not match" + found +
          " (every rank must make the same collective calls with matching sizes)"};
}

} // namespace

CheckResult compareAcrossRanks(int rank, int n, const std::vector<CallToCheck>& calls, const ExchangeParts& exchange) {
  const int64_t count = std::min<int64_t>(static_cast<int64_t>(calls.size()), kMaxCallsPerCheck);
  CheckResult result;
  if (n == 1) {
    result.verdicts.resize(count);
    return result;
  }
  // Rank r's part: how many calls it checks, how many of them carry their contribution,
  // kMaxCallsPerCheck records (unused ones zero), then the contributions, so every rank's
  // part has the same size whatever it has queued.
  const int64_t width = kHeaderFields + 2 * n;
  const int64_t recordsAt = 2;
  const int64_t payloadAt = recordsAt + kMaxCallsPerCheck * width;
  const int64_t part = payloadAt + algo::kMaxInlineBytes / 8;
  auto options = at::TensorOptions().dtype(at::kLong);
  auto in = at::zeros({part}, options);
  int64_t* mine = in.data_ptr<int64_t>();
  mine[0] = count;
  for (int64_t i = 0; i < count; ++i) {
    const auto record = encode(*calls[i].signature, n);
    std::copy(record.begin(), record.end(), mine + recordsAt + i * width);
  }
  // Contributions of the leading calls that have one, each at an 8-byte boundary.
  auto payload = asBytes(in).narrow(0, payloadAt * 8, algo::kMaxInlineBytes);
  int64_t packed = 0;
  int64_t used = 0;
  std::vector<int64_t> offsets;
  for (; packed < count && calls[packed].contribution.defined(); ++packed) {
    const auto& bytes = calls[packed].contribution;
    const int64_t padded = (bytes.numel() + 7) / 8 * 8;
    if (used + padded > algo::kMaxInlineBytes) {
      break;
    }
    payload.narrow(0, used, bytes.numel()).copy_(bytes);
    offsets.push_back(used);
    used += padded;
  }
  mine[1] = packed;
  const auto all = exchange(in);

  const int64_t* parts = all.data_ptr<int64_t>();
  int64_t agreed = count;  // calls every rank has in this check
  int64_t inlined = packed;  // calls whose contribution every rank sent
  for (int r = 0; r < n; ++r) {
    agreed = std::min(agreed, parts[r * part]);
    inlined = std::min(inlined, parts[r * part + 1]);
  }
  auto allBytes = asBytes(all);
  for (int64_t i = 0; i < agreed; ++i) {
    const CallRecords records{parts + recordsAt + i * width, part};
    result.verdicts.push_back(compareCall(records, n, rank, calls[i].opName));
    // Ranks that agree on every call so far packed the same sizes in the same places.
    if (i < inlined && !result.verdicts.back() && static_cast<int64_t>(result.contributions.size()) == i) {
      std::vector<at::Tensor> contributions;
      for (int r = 0; r < n; ++r) {
        contributions.push_back(allBytes.narrow(0, (r * part + payloadAt) * 8 + offsets[i], calls[i].contribution.numel()));
      }
      result.contributions.push_back(std::move(contributions));
    }
  }
  return result;
}

} // namespace qccl
