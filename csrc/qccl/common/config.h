#pragma once

// qccl's settings. This is the one place that reads QCCL_* environment variables; the
// environment supplies defaults, and code paths receive a Config, never the environment.

namespace qccl {

struct Config {
  // Before each collective, check across ranks that the calls match (algo/agreement.h).
  // QCCL_VERIFY=0 saves one small message per collective, at the price that a size
  // mismatch across ranks crashes the process inside Gloo instead of raising.
  bool verifyAcrossRanks = true;

  static Config fromEnvironment();
};

} // namespace qccl
