#pragma once

// The route one tensor of an all-reduce, reduce-scatter or all-gather takes: compressed,
// or exact and why. Decided on the caller's thread (BucketedAllreduce::route(),
// ShardedCompression), counted by qccl.stats().

#include <cstdint>

#include <c10/core/ScalarType.h>

namespace qccl::algo {

// How one tensor is reduced or gathered, and for exact ones, why.
enum class Route : uint8_t {
  Compressed,
  ExactCodecNone,  // the group's codec is "none"
  ExactForced,     // inside qccl.exact()
  ExactDtype,      // not float32, float16 or bfloat16
  ExactReduceOp,   // not SUM or AVG (or PREMUL_SUM, for reduce-scatter)
  ExactSmall,      // fewer bytes than min_bytes
  ExactNoSaving,   // encoded, it would not send fewer bytes than exact
  kCount,
};

const char* routeName(Route route);

// Whether a codec may carry `type`: the floating types it encodes as float32.
bool compressibleDtype(c10::ScalarType type);

} // namespace qccl::algo
