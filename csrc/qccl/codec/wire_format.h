#pragma once

// The wire format's facts (codec.h describes it), written once for both sides that lay
// bytes out by them: the CPU codecs (scaled_block_codecs.cpp, bf16_codec.cpp) and the
// CUDA kernels (cuda/codec_kernels.cu). Plain C++, compiled by nvcc as well.
//
//   fp16, int8, int4: one float32 scale per block, all scales first, then the blocks'
//                     payloads end to end, then zero padding (alignedWireBytes)
//   bf16:             n 16-bit words, then zero padding

#include <cstdint>

#include "qccl/codec/element_ops.h"  // QCCL_HOST_DEVICE, the scale choices

namespace qccl::codec {

// Encoded sizes are rounded up to 4 bytes, so that segments laid end to end in one buffer
// stay aligned for the float32 scales and float16 payloads.
QCCL_HOST_DEVICE constexpr int64_t alignedWireBytes(int64_t bytes) {
  return (bytes + 3) / 4 * 4;
}

QCCL_HOST_DEVICE constexpr int64_t bf16BytesUsed(int64_t n) {
  return 2 * n;
}

// --- the scaled-block codecs: per codec, its payload size and its scale --------------------

// Codes round(x / scale) in [-127, 127], one byte each; scale = absmax / 127.
struct Int8Wire {
  static constexpr int kLevels = 127;
  QCCL_HOST_DEVICE static int64_t payloadBytes(int64_t n) {
    return n;
  }
  QCCL_HOST_DEVICE static void scales(float absmax, float& scale, float& inverse) {
    linearScales<kLevels>(absmax, scale, inverse);
  }
};

// Codes in [-7, 7], two per byte: element 2j in the low nibble of byte j, 2j+1 in the
// high nibble (packNibbles); scale = absmax / 7.
struct Int4Wire {
  static constexpr int kLevels = 7;
  QCCL_HOST_DEVICE static int64_t payloadBytes(int64_t n) {
    return (n + 1) / 2;
  }
  QCCL_HOST_DEVICE static void scales(float absmax, float& scale, float& inverse) {
    linearScales<kLevels>(absmax, scale, inverse);
  }
};

// float16 values x / scale with a power-of-two scale (fp16Scales).
struct Fp16Wire {
  QCCL_HOST_DEVICE static int64_t payloadBytes(int64_t n) {
    return 2 * n;
  }
  QCCL_HOST_DEVICE static void scales(float absmax, float& scale, float& inverse) {
    fp16Scales(absmax, scale, inverse);
  }
};

QCCL_HOST_DEVICE int64_t blockCount(int64_t n, int64_t block) {
  return (n + block - 1) / block;
}

// Where the payload of the block starting at element `first` begins, of `blocks` in all.
template <class Wire>
QCCL_HOST_DEVICE int64_t payloadOffset(int64_t blocks, int64_t first) {
  return blocks * static_cast<int64_t>(sizeof(float)) + Wire::payloadBytes(first);
}

// The bytes before the padding: every scale and every payload.
template <class Wire>
QCCL_HOST_DEVICE int64_t scaledBytesUsed(int64_t n, int64_t block) {
  return payloadOffset<Wire>(blockCount(n, block), n);
}

} // namespace qccl::codec
