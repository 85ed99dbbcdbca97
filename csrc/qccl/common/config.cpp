#include "qccl/common/config.h"

#include <cctype>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <vector>

#include <c10/util/hash.h>

#include "qccl/common/errors.h"

namespace qccl {
namespace {

// One setting: its key, how to parse text into a Config, how to print it back.
struct Setting {
  const char* key;
  std::function<void(Config&, const std::string& value, const std::string& source)> parse;
  std::function<std::string(const Config&)> print;
};

std::string envName(const std::string& key) {
  std::string name = "QCCL_";
  for (char c : key) {
    name += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

bool parseFlag(const std::string& value, const std::string& source) {
  if (value == "1" || value == "true" || value == "on") {
    return true;
  }
  QCCL_CHECK_VALUE(
      value == "0" || value == "false" || value == "off", source, "=", value,
      " is not valid; use 1 or 0");
  return false;
}

int64_t parseInteger(const std::string& value, const std::string& source, int64_t min, int64_t max) {
  size_t used = 0;
  long long parsed = 0;
  try {
    parsed = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  QCCL_CHECK_VALUE(
      used == value.size() && !value.empty() && parsed >= min && parsed <= max, source, "=", value,
      " is not valid; use an integer from ", min, " to ", max);
  return parsed;
}

std::string joinedCodecNames() {
  std::string joined;
  for (const auto& name : codecNames()) {
    joined += (joined.empty() ? "" : ", ") + name;
  }
  return joined;
}

std::string flagText(bool flag) {
  return flag ? "1" : "0";
}

constexpr int64_t kMaxBytes = int64_t{1} << 40;
constexpr int64_t kMinBucketBytes = 1 << 10;

const std::vector<Setting>& settings() {
  static const std::vector<Setting> all = {
      {"verify",
       [](Config& c, const std::string& v, const std::string& s) { c.verifyAcrossRanks = parseFlag(v, s); },
       [](const Config& c) { return flagText(c.verifyAcrossRanks); }},
      {"codec",
       [](Config& c, const std::string& v, const std::string& s) {
         auto kind = parseCodecName(v);
         QCCL_CHECK_VALUE(kind.has_value(), s, "=", v, " is not a codec; use one of ", joinedCodecNames());
         c.codec = *kind;
       },
       [](const Config& c) { return std::string(codecName(c.codec)); }},
      {"block",
       [](Config& c, const std::string& v, const std::string& s) {
         c.block = parseInteger(v, s, kMinBlock, kMaxBlock);
         QCCL_CHECK_VALUE(
             validBlock(c.block), s, "=", v, " is not valid; use a multiple of 8 from ", kMinBlock, " to ", kMaxBlock);
       },
       [](const Config& c) { return std::to_string(c.block); }},
      {"min_bytes",
       [](Config& c, const std::string& v, const std::string& s) { c.minBytes = parseInteger(v, s, 0, kMaxBytes); },
       [](const Config& c) { return std::to_string(c.minBytes); }},
      {"error_feedback",
       [](Config& c, const std::string& v, const std::string& s) { c.errorFeedback = parseFlag(v, s); },
       [](const Config& c) { return flagText(c.errorFeedback); }},
      {"stochastic",
       [](Config& c, const std::string& v, const std::string& s) { c.stochastic = parseFlag(v, s); },
       [](const Config& c) { return flagText(c.stochastic); }},
      {"bucket_bytes",
       [](Config& c, const std::string& v, const std::string& s) {
         c.bucketBytes = parseInteger(v, s, kMinBucketBytes, kMaxBytes);
       },
       [](const Config& c) { return std::to_string(c.bucketBytes); }},
      {"error_feedback_max_bytes",
       [](Config& c, const std::string& v, const std::string& s) {
         c.errorFeedbackMaxBytes = parseInteger(v, s, 0, kMaxBytes);
       },
       [](const Config& c) { return std::to_string(c.errorFeedbackMaxBytes); }},
      {"allgather_codec",
       [](Config& c, const std::string& v, const std::string& s) {
         auto kind = parseCodecName(v);
         QCCL_CHECK_VALUE(kind.has_value(), s, "=", v, " is not a codec; use one of ", joinedCodecNames());
         c.allgatherCodec = *kind;
       },
       [](const Config& c) { return std::string(codecName(c.allgatherCodec)); }},
      {"ranks_per_node",
       [](Config& c, const std::string& v, const std::string& s) { c.ranksPerNode = parseInteger(v, s, 0, 1 << 20); },
       [](const Config& c) { return std::to_string(c.ranksPerNode); }},
      {"p2p_codec",
       [](Config& c, const std::string& v, const std::string& s) {
         auto kind = parseCodecName(v);
         QCCL_CHECK_VALUE(
             kind.has_value() && *kind != CodecKind::Int4, s, "=", v,
             " is not a point-to-point codec; use one of none, fp16, bf16, int8");
         c.p2pCodec = *kind;
       },
       [](const Config& c) { return std::string(codecName(c.p2pCodec)); }},
      {"cuda_transport",
       [](Config& c, const std::string& v, const std::string& s) {
         QCCL_CHECK_VALUE(v == "nccl" || v == "gloo", s, "=", v, " is not a CUDA transport; use nccl or gloo");
         c.cudaTransport = v == "nccl" ? Config::CudaTransport::Nccl : Config::CudaTransport::StagedThroughHost;
       },
       [](const Config& c) {
         return std::string(c.cudaTransport == Config::CudaTransport::Nccl ? "nccl" : "gloo");
       }},
      {"force_network",
       [](Config& c, const std::string& v, const std::string& s) { c.forceNetwork = parseFlag(v, s); },
       [](const Config& c) { return flagText(c.forceNetwork); }},
  };
  return all;
}

std::string knownKeys() {
  std::string keys;
  for (const auto& s : settings()) {
    keys += (keys.empty() ? "" : ", ") + std::string(s.key);
  }
  return keys;
}

} // namespace

Config Config::fromEnvironment() {
  Config config;
  for (const auto& setting : settings()) {
    const std::string name = envName(setting.key);
    const char* raw = std::getenv(name.c_str());
    if (raw != nullptr && *raw != '\0') {
      setting.parse(config, raw, name);
    }
  }
  return config;
}

Config Config::overriddenBy(const std::map<std::string, std::string>& overrides) const {
  Config config = *this;
  for (const auto& [key, value] : overrides) {
    const Setting* found = nullptr;
    for (const auto& setting : settings()) {
      if (key == setting.key) {
        found = &setting;
      }
    }
    QCCL_CHECK_VALUE(found != nullptr, "unknown option '", key, "'; the options are ", knownKeys());
    found->parse(config, value, key);
  }
  return config;
}

std::map<std::string, std::string> Config::describe() const {
  std::map<std::string, std::string> out;
  for (const auto& setting : settings()) {
    out[setting.key] = setting.print(*this);
  }
  return out;
}

int64_t Config::fingerprint() const {
  size_t h = 0;
  for (const auto& [key, value] : describe()) {
    if (key == "p2p_codec") {
      continue;
    }
    h = c10::hash_combine(h, std::hash<std::string>()(key + "=" + value));
  }
  return static_cast<int64_t>(h & 0x7fffffffffffffffULL);
}

} // namespace qccl
