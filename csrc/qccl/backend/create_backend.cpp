// The public C++ entry points (qccl/qccl.h, qccl/options.h).

#include "qccl/qccl.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "qccl/backend/process_group_qccl.h"
#include "qccl/common/build_info.h"
#include "qccl/common/config.h"
#include "qccl/common/errors.h"
#include "qccl/transport/fresh_prefix.h"
#include "qccl/transport/gloo_factory.h"

namespace qccl {
namespace {

void setText(std::map<std::string, std::string>& out, const char* key, const std::optional<std::string>& value) {
  if (value) {
    out[key] = *value;
  }
}

void setNumber(std::map<std::string, std::string>& out, const char* key, const std::optional<int64_t>& value) {
  if (value) {
    out[key] = std::to_string(*value);
  }
}

void setFlag(std::map<std::string, std::string>& out, const char* key, const std::optional<bool>& value) {
  if (value) {
    out[key] = *value ? "1" : "0";
  }
}

Config configFor(const Options& options) {
  return Config::fromEnvironment().overriddenBy(options.settings());
}

} // namespace

std::map<std::string, std::string> Options::settings() const {
  std::map<std::string, std::string> out;
  setText(out, "codec", codec);
  setNumber(out, "block", block);
  setNumber(out, "min_bytes", minBytes);
  setFlag(out, "error_feedback", errorFeedback);
  setFlag(out, "stochastic", stochastic);
  setNumber(out, "bucket_bytes", bucketBytes);
  setNumber(out, "error_feedback_max_bytes", errorFeedbackMaxBytes);
  setFlag(out, "verify", verify);
  setFlag(out, "force_network", forceNetwork);
  setText(out, "p2p_codec", p2pCodec);
  setText(out, "allgather_codec", allgatherCodec);
  setNumber(out, "ranks_per_node", ranksPerNode);
  setText(out, "cuda_transport", cudaTransport);
  return out;
}

std::map<std::string, std::string> Options::resolved() const {
  return configFor(*this).describe();
}

c10::intrusive_ptr<c10d::Backend> createBackend(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    const Options& options,
    c10::intrusive_ptr<c10d::Backend> nccl) {
  QCCL_CHECK_VALUE(store, "createBackend needs a store, not null");
  QCCL_CHECK_VALUE(options.timeout.count() > 0, "Options.timeout must be positive, not ", options.timeout.count(), " ms");
  auto config = configFor(options);  // invalid options raise before any connection
  // The transports' keys go under a prefix of this creation's own: a store that outlives a
  // restart (torchrun's) still holds the previous attempt's under the same names.
  auto fresh = c10::make_intrusive<c10d::PrefixStore>(agreeOnFreshPrefix(store, rank, size, options.timeout), store);
  auto gloo = makeGlooBackend(c10::make_intrusive<c10d::PrefixStore>("gloo/", fresh), rank, size, options.timeout);
  return c10::make_intrusive<ProcessGroupQCCL>(gloo, rank, size, options.timeout, config, std::move(nccl), fresh);
}

bool hasCuda() {
  return builtWithCuda();
}

} // namespace qccl
