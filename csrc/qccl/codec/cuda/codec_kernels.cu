// The codec kernels (device_codec.h). Each scaled-block codec (fp16, int8, int4) runs a
// group of threads per quantization block: the group finds the block's largest magnitude,
// picks the scale exactly as the CPU codec does, then encodes its elements; bf16 is one
// thread per element. Only the CUDA runtime is visible here, not torch.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "qccl/codec/counter_rng.h"
#include "qccl/codec/cuda/device_codec.h"
#include "qccl/codec/element_ops.h"
#include "qccl/codec/wire_format.h"

namespace qccl::codec::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr uint32_t kFullMask = 0xFFFFFFFFu;

// --- how one block's elements become payload and back -------------------------------------
// encode/decode handle the block's elements tid, tid + stride, ... of one group.

template <int kLevels>
__device__ int8_t codeOf(float x, float inverse, const EncodeOptions& options, int64_t index) {
  if (inverse == 0.0f) {
    return 0;  // the scale alone decides the decoded values
  }
  return options.stochastic
      ? quantizeStochastic<kLevels>(x, inverse, uniform01(options.seed, static_cast<uint64_t>(index)))
      : quantizeNearest<kLevels>(x, inverse);
}

__device__ void store(float* out, int64_t i, float value, bool accumulate) {
  out[i] = accumulate ? addRn(out[i], value) : value;
}

struct Int8Format : Int8Wire {
  __device__ static void encode(const float* x, int64_t len, float inverse, uint8_t* out, int tid, int stride,
                                const EncodeOptions& options, int64_t first) {
    for (int64_t i = tid; i < len; i += stride) {
      out[i] = static_cast<uint8_t>(codeOf<kLevels>(x[i], inverse, options, first + i));
    }
  }
  __device__ static void decode(const uint8_t* in, int64_t len, float scale, float* out, bool accumulate, int tid,
                                int stride) {
    for (int64_t i = tid; i < len; i += stride) {
      store(out, i, dequantize(static_cast<int8_t>(in[i]), scale), accumulate);
    }
  }
};

struct Int4Format : Int4Wire {
  __device__ static void encode(const float* x, int64_t len, float inverse, uint8_t* out, int tid, int stride,
                                const EncodeOptions& options, int64_t first) {
    for (int64_t j = tid; j < (len + 1) / 2; j += stride) {
      const int64_t i = 2 * j;
      const int8_t low = codeOf<kLevels>(x[i], inverse, options, first + i);
      const int8_t high = i + 1 < len ? codeOf<kLevels>(x[i + 1], inverse, options, first + i + 1) : 0;
      out[j] = packNibbles(low, high);
    }
  }
  __device__ static void decode(const uint8_t* in, int64_t len, float scale, float* out, bool accumulate, int tid,
                                int stride) {
    for (int64_t j = tid; j < (len + 1) / 2; j += stride) {
      const int64_t i = 2 * j;
      store(out, i, dequantize(lowNibble(in[j]), scale), accumulate);
      if (i + 1 < len) {
        store(out, i + 1, dequantize(highNibble(in[j]), scale), accumulate);
      }
    }
  }
};

struct Fp16Format : Fp16Wire {
  // __float2half_rn rounds to nearest even like the CPU's conversion; the values are
  // finite and below 2^15, so neither overflow nor NaN handling comes into play.
  __device__ static void encode(const float* x, int64_t len, float inverse, uint8_t* out, int tid, int stride,
                                const EncodeOptions&, int64_t) {
    auto* h = reinterpret_cast<uint16_t*>(out);
    for (int64_t i = tid; i < len; i += stride) {
      h[i] = inverse == 0.0f ? 0 : __half_as_ushort(__float2half_rn(mulRn(x[i], inverse)));
    }
  }
  __device__ static void decode(const uint8_t* in, int64_t len, float scale, float* out, bool accumulate, int tid,
                                int stride) {
    const auto* h = reinterpret_cast<const uint16_t*>(in);
    for (int64_t i = tid; i < len; i += stride) {
      store(out, i, mulRn(__half2float(__ushort_as_half(h[i])), scale), accumulate);
    }
  }
};

// --- the scaled-block kernels ----------------------------------------------------------------

// Largest magnitude and "holds NaN/Inf" over a group of kGroup threads. Every thread of
// the CTA must call it (it may synchronise the CTA).
template <int kGroup>
__device__ void reduceOverGroup(float& absmax, bool& nonFinite) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    absmax = fmaxf(absmax, __shfl_xor_sync(kFullMask, absmax, offset));
  }
  nonFinite = __any_sync(kFullMask, nonFinite);
  if constexpr (kGroup > kWarp) {
    __shared__ float warpMax[kThreads / kWarp];
    __shared__ bool warpNonFinite[kThreads / kWarp];
    const int warp = threadIdx.x / kWarp;
    if (threadIdx.x % kWarp == 0) {
      warpMax[warp] = absmax;
      warpNonFinite[warp] = nonFinite;
    }
    __syncthreads();
    constexpr int kWarpsPerGroup = kGroup / kWarp;
    const int first = warp / kWarpsPerGroup * kWarpsPerGroup;
    for (int w = first; w < first + kWarpsPerGroup; ++w) {
      absmax = fmaxf(absmax, warpMax[w]);
      nonFinite = nonFinite || warpNonFinite[w];
    }
  }
}

// Layout: `blocks` float32 scales, then the payload, then zero padding up to `total`.
template <class Format, int kGroup>
__global__ void encodeScaled(const float* in, int64_t n, int64_t block, int64_t blocks, uint8_t* out, int64_t used,
                             int64_t total, EncodeOptions options) {
  const int tid = threadIdx.x % kGroup;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * (kThreads / kGroup) + threadIdx.x / kGroup;
  const bool active = b < blocks;
  const int64_t begin = b * block;
  const int64_t len = active ? min(block, n - begin) : 0;
  const float* x = in + begin;

  float absmax = 0.0f;  // fmaxf ignores NaN; nonFinite records it
  bool nonFinite = false;
  for (int64_t i = tid; i < len; i += kGroup) {
    const float a = fabsf(x[i]);
    absmax = fmaxf(absmax, a);
    nonFinite = nonFinite || !(a <= FLT_MAX);
  }
  reduceOverGroup<kGroup>(absmax, nonFinite);
  if (blockIdx.x == 0 && threadIdx.x < total - used) {
    out[used + threadIdx.x] = 0;  // the alignment padding, so the wire bytes are fully determined
  }
  if (!active) {
    return;
  }
  float scale = 0.0f;
  float inverse = 0.0f;
  if (nonFinite) {
    scale = __uint_as_float(0x7FC00000u);  // quiet NaN, as the CPU codec writes
  } else if (absmax >= kTinyBlock) {
    Format::scales(absmax, scale, inverse);
  }
  if (tid == 0) {
    reinterpret_cast<float*>(out)[b] = scale;
  }
  Format::encode(x, len, inverse, out + payloadOffset<Format>(blocks, begin), tid, kGroup, options, begin);
}

template <class Format, int kGroup>
__global__ void decodeScaled(const uint8_t* in, int64_t n, int64_t block, int64_t blocks, float* out, bool accumulate) {
  const int tid = threadIdx.x % kGroup;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * (kThreads / kGroup) + threadIdx.x / kGroup;
  if (b >= blocks) {
    return;
  }
  const int64_t begin = b * block;
  const float scale = reinterpret_cast<const float*>(in)[b];
  Format::decode(in + payloadOffset<Format>(blocks, begin), min(block, n - begin), scale, out + begin, accumulate, tid,
                 kGroup);
}

// --- bf16 ------------------------------------------------------------------------------------

// `total` 16-bit words: n values, then a zero word when n is odd (alignment padding).
__global__ void encodeBf16(const float* in, int64_t n, uint16_t* out, int64_t total, EncodeOptions options) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    if (i >= n) {
      out[i] = 0;
    } else {
      out[i] = options.stochastic ? bf16Stochastic(in[i], randomBits(options.seed, static_cast<uint64_t>(i)))
                                  : bf16Nearest(in[i]);
    }
  }
}

__global__ void decodeBf16(const uint16_t* in, int64_t n, float* out, bool accumulate) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    store(out, i, bf16Value(in[i]), accumulate);
  }
}

// --- launching -------------------------------------------------------------------------------

void checkLaunch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("qccl: the CUDA ") + what + " kernel failed to launch: " +
                             cudaGetErrorString(error));
  }
}

void checkArguments(int64_t block, const void* encoded) {
  if (!validBlock(block)) {
    throw std::invalid_argument("qccl: block " + std::to_string(block) + " is not a valid quantization block");
  }
  if (reinterpret_cast<uintptr_t>(encoded) % 4 != 0) {
    throw std::invalid_argument("qccl: encoded buffers on the GPU must be 4-byte aligned");
  }
}

unsigned elementwiseGrid(int64_t n) {
  constexpr int64_t kMaxCtas = int64_t{1} << 16;  // enough to fill any GPU; the kernels stride
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxCtas, (n + kThreads - 1) / kThreads)));
}

// Bigger blocks get bigger groups, so that a few huge blocks still fill the GPU.
template <class Fn>
void withGroupSize(int64_t block, const Fn& fn) {
  if (block >= 2048) {
    fn(std::integral_constant<int, 256>{});
  } else if (block >= 1024) {
    fn(std::integral_constant<int, 128>{});
  } else if (block >= 512) {
    fn(std::integral_constant<int, 64>{});
  } else {
    fn(std::integral_constant<int, 32>{});
  }
}

template <class Format>
void encodeWith(int64_t block, const float* in, int64_t n, uint8_t* out, const EncodeOptions& options,
                cudaStream_t stream) {
  const int64_t blocks = blockCount(n, block);
  const int64_t used = scaledBytesUsed<Format>(n, block);
  const int64_t total = alignedWireBytes(used);
  withGroupSize(block, [&](auto group) {
    constexpr int kGroup = decltype(group)::value;
    const int64_t ctas = (blocks + kThreads / kGroup - 1) / (kThreads / kGroup);
    encodeScaled<Format, kGroup><<<static_cast<unsigned>(ctas), kThreads, 0, stream>>>(
        in, n, block, blocks, out, used, total, options);
  });
  checkLaunch("encode");
}

template <class Format>
void decodeWith(int64_t block, const uint8_t* in, int64_t n, float* out, bool accumulate, cudaStream_t stream) {
  const int64_t blocks = blockCount(n, block);
  withGroupSize(block, [&](auto group) {
    constexpr int kGroup = decltype(group)::value;
    const int64_t ctas = (blocks + kThreads / kGroup - 1) / (kThreads / kGroup);
    decodeScaled<Format, kGroup><<<static_cast<unsigned>(ctas), kThreads, 0, stream>>>(
        in, n, block, blocks, out, accumulate);
  });
  checkLaunch("decode");
}

} // namespace

void encode(CodecKind kind, int64_t block, const float* in, int64_t n, uint8_t* out, const EncodeOptions& options,
            void* stream) {
  checkArguments(block, out);
  if (n == 0) {
    return;  // encodedBytes(0) == 0
  }
  auto s = static_cast<cudaStream_t>(stream);
  switch (kind) {
    case CodecKind::Fp16:
      return encodeWith<Fp16Format>(block, in, n, out, options, s);
    case CodecKind::Int8:
      return encodeWith<Int8Format>(block, in, n, out, options, s);
    case CodecKind::Int4:
      return encodeWith<Int4Format>(block, in, n, out, options, s);
    case CodecKind::Bf16: {
      const int64_t total = alignedWireBytes(bf16BytesUsed(n)) / 2;
      encodeBf16<<<elementwiseGrid(total), kThreads, 0, s>>>(in, n, reinterpret_cast<uint16_t*>(out), total, options);
      return checkLaunch("encode");
    }
    case CodecKind::None:
      break;
  }
  throw std::invalid_argument("qccl: codec 'none' has no kernels");
}

void decode(CodecKind kind, int64_t block, const uint8_t* in, int64_t n, float* out, bool accumulate, void* stream) {
  checkArguments(block, in);
  if (n == 0) {
    return;
  }
  auto s = static_cast<cudaStream_t>(stream);
  switch (kind) {
    case CodecKind::Fp16:
      return decodeWith<Fp16Format>(block, in, n, out, accumulate, s);
    case CodecKind::Int8:
      return decodeWith<Int8Format>(block, in, n, out, accumulate, s);
    case CodecKind::Int4:
      return decodeWith<Int4Format>(block, in, n, out, accumulate, s);
    case CodecKind::Bf16:
      decodeBf16<<<elementwiseGrid(n), kThreads, 0, s>>>(reinterpret_cast<const uint16_t*>(in), n, out, accumulate);
      return checkLaunch("decode");
    case CodecKind::None:
      break;
  }
  throw std::invalid_argument("qccl: codec 'none' has no kernels");
}

} // namespace qccl::codec::cuda
