#pragma once

// The route one tensor of an all-reduce takes: compressed, or exact and why. Decided by
// BucketedAllreduce::route() on the caller's thread, counted by qccl.stats().

#include <cstdint>

namespace qccl::algo {

// How one tensor of an allreduce is reduced, and for exact ones, why.
enum class Route : uint8_t {
  Compressed,
  ExactCodecNone,  // the group's codec is "none"
  ExactForced,     // inside qccl.exact()
  ExactDtype,      // not float32, float16 or bfloat16
  ExactReduceOp,   // not SUM or AVG
  ExactSmall,      // fewer bytes than min_bytes
  ExactNoSaving,   // encoded, it would not send fewer bytes than exact
  kCount,
};

const char* routeName(Route route);

} // namespace qccl::algo
