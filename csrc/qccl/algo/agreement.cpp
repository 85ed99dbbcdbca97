#include "qccl/algo/agreement.h"

#include <sstream>

#include <ATen/ops/empty.h>
#include <c10/util/hash.h>

#include "qccl/algo/reduce_lowering.h"
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

std::optional<Disagreement> compareAcrossRanks(
    GlooTransport& net,
    const std::string& opName,
    const OpSignature& mine) {
  const int n = net.size();
  if (n == 1) {
    return std::nullopt;
  }
  const auto record = encode(mine, n);
  const int64_t width = static_cast<int64_t>(record.size());
  auto options = at::TensorOptions().dtype(at::kLong);
  auto in = at::empty({width}, options);
  std::copy(record.begin(), record.end(), in.data_ptr<int64_t>());
  auto all = at::empty({width * n}, options);
  net.waitFor(net.gloo()._allgather_base(all, in, c10d::AllgatherOptions()), opName + " (argument check)");

  const int64_t* records = all.data_ptr<int64_t>();
  auto rec = [&](int r) { return records + r * width; };
  const std::string prefix = opName + " on rank " + std::to_string(net.rank()) + ": ";
  using Kind = Disagreement::Kind;
  for (int r = 0; r < n; ++r) {
    if (rec(r)[kFailedField] != 0) {
      return Disagreement{
          Kind::FailedOnARank,
          prefix + "rank " + std::to_string(r) + " raised for this call before taking part (its own error says why), "
              "so no rank runs it"};
    }
  }
  std::ostringstream problems;
  Kind kind = Kind::Call;
  for (int r = 0; r < n; ++r) {
    if (std::equal(rec(r), rec(r) + kCallFields, rec(0)) && !std::equal(rec(r), rec(r) + kRunFields, rec(0))) {
      problems << "; rank 0 and rank " << r << " make the same call (" << describe(rec(0))
               << ") but with different qccl settings (QCCL_* variables or qccl.Options) or "
                  "one of them inside qccl.exact() and the other not";
      kind = Kind::Settings;
      break;
    }
    if (!std::equal(rec(r), rec(r) + kRunFields, rec(0))) {
      problems << "; rank 0 calls " << describe(rec(0)) << " but rank " << r << " calls " << describe(rec(r));
      break;
    }
  }
  // all-to-all: what rank s sends to rank d must be what rank d expects from rank s.
  for (int s = 0; s < n && problems.tellp() == 0; ++s) {
    for (int d = 0; d < n; ++d) {
      const int64_t sent = rec(s)[kHeaderFields + d];
      const int64_t expected = rec(d)[kHeaderFields + n + s];
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

} // namespace qccl
