#pragma once

// The per-element steps of the codecs, compiled into both the CPU codecs and the CUDA
// kernels (codec/cuda/), so both write the same bytes and decode to the same values.
// Plain C++ and the CUDA runtime only: nvcc compiles this without torch's headers.
//
// On the GPU every multiply and add is an explicit IEEE operation (__fmul_rn,
// __fadd_rn): nvcc would otherwise fuse `x * inverse + u` into one FMA, which rounds once
// instead of twice and so disagrees with the CPU (built with -ffp-contract=off) in the
// last bit. Divisions are IEEE too (__fdiv_rn), whatever --use_fast_math says.

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define QCCL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define QCCL_HOST_DEVICE inline
#endif

namespace qccl::codec {

QCCL_HOST_DEVICE float mulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

QCCL_HOST_DEVICE float addRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

QCCL_HOST_DEVICE float divRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

QCCL_HOST_DEVICE uint32_t bitsOf(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
#endif
}

QCCL_HOST_DEVICE float floatOf(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
#endif
}

// --- int8 and int4: integer codes in [-kLevels, kLevels] ------------------------------------

// scale = absmax / levels; values are encoded as round(x * inverse).
template <int kLevels>
QCCL_HOST_DEVICE void linearScales(float absmax, float& scale, float& inverse) {
  scale = divRn(absmax, static_cast<float>(kLevels));
  inverse = divRn(static_cast<float>(kLevels), absmax);
}

// (v + kRoundingShift) - kRoundingShift rounds |v| < 2^22 to the nearest integer (ties to
// even) with two additions the CPU compiler vectorizes, unlike std::nearbyint.
constexpr float kRoundingShift = 0x1.8p23f;

// Clamping happens in float (minps/maxps on the CPU), so the loop vectorizes with SSE2.
template <int kLevels>
QCCL_HOST_DEVICE float clampToLevels(float v) {
  constexpr float kMax = static_cast<float>(kLevels);
  v = v < -kMax ? -kMax : v;
  return v > kMax ? kMax : v;
}

template <int kLevels>
QCCL_HOST_DEVICE int8_t quantizeNearest(float x, float inverse) {
  const float v = clampToLevels<kLevels>(mulRn(x, inverse));
  return static_cast<int8_t>(static_cast<int32_t>(addRn(addRn(v, kRoundingShift), -kRoundingShift)));
}

// Rounds up with probability equal to the fraction dropped: floor(x * inverse + u) for u
// uniform in [0, 1).
template <int kLevels>
QCCL_HOST_DEVICE int8_t quantizeStochastic(float x, float inverse, float u) {
  const float v = clampToLevels<kLevels>(addRn(mulRn(x, inverse), u));
  int32_t code = static_cast<int32_t>(v);        // truncates toward zero...
  code -= static_cast<float>(code) > v ? 1 : 0;  // ...so step down below zero: floor
  return static_cast<int8_t>(code);
}

QCCL_HOST_DEVICE float dequantize(int32_t code, float scale) {
  return mulRn(static_cast<float>(code), scale);
}

// int4 packs element 2j into the low nibble of byte j and element 2j+1 into the high one.
QCCL_HOST_DEVICE uint8_t packNibbles(int8_t low, int8_t high) {
  return static_cast<uint8_t>((low & 0x0F) | (high << 4));
}

// Shift a nibble to the top of an int8, then arithmetic-shift back: sign extension.
QCCL_HOST_DEVICE int32_t lowNibble(uint8_t byte) {
  return static_cast<int8_t>(byte << 4) >> 4;
}

QCCL_HOST_DEVICE int32_t highNibble(uint8_t byte) {
  return static_cast<int8_t>(byte) >> 4;
}

// --- fp16: a power-of-two scale ----------------------------------------------------------

// Puts the block's largest magnitude in [2^14, 2^15): no finite input overflows float16's
// 65504, small values keep float16's full precision instead of falling into its
// subnormals, and dividing by a power of two is exact. absmax is finite and at least
// kTinyBlock (a normal float), so its exponent is its biased exponent field minus 127,
// and both powers of two below stay within the normal range (2^-114 .. 2^114).
QCCL_HOST_DEVICE void fp16Scales(float absmax, float& scale, float& inverse) {
  const int exponent = static_cast<int>((bitsOf(absmax) >> 23) & 0xFF) - 127;
  scale = floatOf(static_cast<uint32_t>(exponent - 14 + 127) << 23);
  inverse = floatOf(static_cast<uint32_t>(14 - exponent + 127) << 23);
}

// --- bf16: the upper 16 bits of a float32, rounded ------------------------------------------

QCCL_HOST_DEVICE uint16_t bf16Nearest(float x) {
  const uint32_t bits = bitsOf(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    return 0x7FC0;  // a quiet NaN, as torch rounds NaN
  }
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// Adds 16 random bits below the kept ones, then truncates: rounds up with probability
// equal to the dropped fraction. A finite value never rounds up to Inf.
QCCL_HOST_DEVICE uint16_t bf16Stochastic(float x, uint32_t randomBits) {
  const uint32_t bits = bitsOf(x);
  if ((bits & 0x7F800000u) == 0x7F800000u) {
    return bf16Nearest(x);  // NaN and Inf as they are
  }
  const uint32_t rounded = (bits + (randomBits >> 16)) >> 16;
  const bool overflowed = (rounded & 0x7F80u) == 0x7F80u;
  return static_cast<uint16_t>(overflowed ? bits >> 16 : rounded);
}

QCCL_HOST_DEVICE float bf16Value(uint16_t half) {
  return floatOf(static_cast<uint32_t>(half) << 16);
}

} // namespace qccl::codec
