#pragma once

// Random numbers for stochastic rounding without RNG state: element i's number is a hash
// of (seed, i) (SplitMix64's finaliser). Any thread can compute any element's number, so
// parallel encoding gives the same bytes as serial encoding, and a seed made of shared
// state (the call counter, the chunk, the rank) makes runs reproducible.

#include <cstdint>

#include "qccl/codec/element_ops.h"  // QCCL_HOST_DEVICE: the CUDA kernels use these too

namespace qccl::codec {

QCCL_HOST_DEVICE uint32_t randomBits(uint64_t seed, uint64_t index) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>((z ^ (z >> 31)) >> 32);
}

// Uniform in [0, 1), 24 random bits.
QCCL_HOST_DEVICE float uniform01(uint64_t seed, uint64_t index) {
  return static_cast<float>(randomBits(seed, index) >> 8) * 0x1p-24f;
}

} // namespace qccl::codec
