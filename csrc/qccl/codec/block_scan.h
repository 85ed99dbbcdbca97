#pragma once

// What a blockwise codec needs to know about a block before choosing its scale. Written
// as plain loops the compiler vectorizes (compare-and-select, no branches).

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace qccl::codec {

struct BlockScan {
  float absmax = 0.0f;     // largest finite magnitude (NaN is ignored by the compare)
  bool nonFinite = false;  // the block holds a NaN or an Inf
};

inline BlockScan scanBlock(const float* x, int64_t n) {
  float absmax = 0.0f;
  int nonFinite = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    absmax = a > absmax ? a : absmax;
    nonFinite |= !(a <= FLT_MAX);
  }
  return {absmax, nonFinite != 0};
}

// Scales are stored as raw float32 at the start of a segment whose alignment is not
// guaranteed; memcpy is the well-defined unaligned access.
inline void storeScale(uint8_t* scales, int64_t block, float scale) {
  std::memcpy(scales + block * sizeof(float), &scale, sizeof(float));
}

inline float loadScale(const uint8_t* scales, int64_t block) {
  float scale;
  std::memcpy(&scale, scales + block * sizeof(float), sizeof(float));
  return scale;
}

} // namespace qccl::codec
