#include "qccl/common/config.h"

#include <cstdlib>
#include <string>

#include "qccl/common/errors.h"

namespace qccl {
namespace {

bool readFlag(const char* name, bool fallback) {
  const char* raw = std::getenv(name);
  if (raw == nullptr || *raw == '\0') {
    return fallback;
  }
  const std::string value(raw);
  if (value == "1" || value == "true" || value == "on") {
    return true;
  }
  if (value == "0" || value == "false" || value == "off") {
    return false;
  }
  QCCL_CHECK_VALUE(false, name, "=", value, " is not valid; use 1 or 0");
  return fallback;  // unreachable
}

} // namespace

Config Config::fromEnvironment() {
  Config config;
  config.verifyAcrossRanks = readFlag("QCCL_VERIFY", config.verifyAcrossRanks);
  return config;
}

} // namespace qccl
