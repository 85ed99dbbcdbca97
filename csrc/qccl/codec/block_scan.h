#pragma once

// What a blockwise codec needs to know about a block before choosing its scale.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace qccl::codec {

struct BlockScan {
  float absmax = 0.0f;     // largest magnitude (NaN is ignored by the compare)
  bool nonFinite = false;  // the block holds a NaN or an Inf
};

// Folds x[i] into a running scan; NaN never wins the compare.
inline void scanElement(float x, float& absmax, bool& nonFinite) {
  const float a = std::fabs(x);
  absmax = a > absmax ? a : absmax;
  nonFinite = nonFinite || !(a <= FLT_MAX);
}

#if defined(__SSE2__)
// GCC does not vectorize the max reduction of the plain loop, and the scan is half of
// the encoder's work, so on x86-64 (SSE2 is its baseline) it is written out by hand.
inline BlockScan scanBlock(const float* x, int64_t n) {
  const __m128 magnitudeBits = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  const __m128 largestFinite = _mm_set1_ps(FLT_MAX);
  __m128 max0 = _mm_setzero_ps(), max1 = _mm_setzero_ps(), bad = _mm_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128 a = _mm_and_ps(_mm_loadu_ps(x + i), magnitudeBits);
    const __m128 b = _mm_and_ps(_mm_loadu_ps(x + i + 4), magnitudeBits);
    max0 = _mm_max_ps(a, max0);  // returns the second operand when the first is NaN
    max1 = _mm_max_ps(b, max1);
    bad = _mm_or_ps(bad, _mm_or_ps(_mm_cmpnle_ps(a, largestFinite), _mm_cmpnle_ps(b, largestFinite)));
  }
  float lanes[4];
  _mm_storeu_ps(lanes, _mm_max_ps(max0, max1));
  BlockScan scan{std::max(std::max(lanes[0], lanes[1]), std::max(lanes[2], lanes[3])),
                 _mm_movemask_ps(bad) != 0};
  for (; i < n; ++i) {
    scanElement(x[i], scan.absmax, scan.nonFinite);
  }
  return scan;
}
#else
inline BlockScan scanBlock(const float* x, int64_t n) {
  BlockScan scan;
  for (int64_t i = 0; i < n; ++i) {
    scanElement(x[i], scan.absmax, scan.nonFinite);
  }
  return scan;
}
#endif

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
