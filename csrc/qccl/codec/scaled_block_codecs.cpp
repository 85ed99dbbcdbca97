// fp16, int8 and int4: codecs that store one float32 scale per block, then the payload.
// ScaledBlockCodec does the block bookkeeping and threading; a Format says how one
// block's values become payload and back, by the facts of its wire (wire_format.h).

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include "qccl/codec/block_scan.h"
#include "qccl/codec/codec_impls.h"
#include "qccl/codec/counter_rng.h"
#include "qccl/codec/element_ops.h"
#include "qccl/codec/wire_format.h"

namespace qccl::codec {
namespace {

// Integer codes in [-kLevels, kLevels], nearest or stochastic rounding of x * inverse.
template <int kLevels>
void quantize(const float* x, int64_t n, float inverse, int8_t* q, const EncodeOptions& options, int64_t first) {
  if (!options.stochastic) {
    for (int64_t i = 0; i < n; ++i) {
      q[i] = quantizeNearest<kLevels>(x[i], inverse);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    q[i] = quantizeStochastic<kLevels>(x[i], inverse, uniform01(options.seed, static_cast<uint64_t>(first + i)));
  }
}

struct Int8Format : Int8Wire {
  static void encode(const float* x, int64_t n, float inverse, uint8_t* out, const EncodeOptions& o, int64_t first) {
    quantize<kLevels>(x, n, inverse, reinterpret_cast<int8_t*>(out), o, first);
  }
  template <bool kAccumulate>
  static void decode(const uint8_t* in, int64_t n, float scale, float* out) {
    const auto* q = reinterpret_cast<const int8_t*>(in);
    for (int64_t i = 0; i < n; ++i) {
      const float v = dequantize(q[i], scale);
      out[i] = kAccumulate ? out[i] + v : v;
    }
  }
};

struct Int4Format : Int4Wire {
  static constexpr int64_t kTile = 256;  // codes quantized at a time before packing
  static void encode(const float* x, int64_t n, float inverse, uint8_t* out, const EncodeOptions& o, int64_t first) {
    int8_t q[kTile];
    for (int64_t start = 0; start < n; start += kTile) {
      const int64_t len = std::min(kTile, n - start);
      quantize<kLevels>(x + start, len, inverse, q, o, first + start);
      if (len % 2 != 0) {
        q[len] = 0;
      }
      uint8_t* bytes = out + start / 2;
      for (int64_t j = 0; j < (len + 1) / 2; ++j) {
        bytes[j] = packNibbles(q[2 * j], q[2 * j + 1]);
      }
    }
  }
  template <bool kAccumulate>
  static void decode(const uint8_t* in, int64_t n, float scale, float* out) {
    const int64_t pairs = n / 2;
    for (int64_t j = 0; j < pairs; ++j) {
      const float a = dequantize(lowNibble(in[j]), scale);
      const float b = dequantize(highNibble(in[j]), scale);
      out[2 * j] = kAccumulate ? out[2 * j] + a : a;
      out[2 * j + 1] = kAccumulate ? out[2 * j + 1] + b : b;
    }
    if (n % 2 != 0) {
      const float a = dequantize(lowNibble(in[pairs]), scale);
      out[n - 1] = kAccumulate ? out[n - 1] + a : a;
    }
  }
};

struct Fp16Format : Fp16Wire {
  static void encode(const float* x, int64_t n, float inverse, uint8_t* out, const EncodeOptions&, int64_t) {
    auto* h = reinterpret_cast<uint16_t*>(out);  // segments are 4-byte aligned (encodedBytes)
    for (int64_t i = 0; i < n; ++i) {
      h[i] = c10::detail::fp16_ieee_from_fp32_value(mulRn(x[i], inverse));
    }
  }
  template <bool kAccumulate>
  static void decode(const uint8_t* in, int64_t n, float scale, float* out) {
    const auto* h = reinterpret_cast<const uint16_t*>(in);
    for (int64_t i = 0; i < n; ++i) {
      const float v = mulRn(c10::detail::fp16_ieee_to_fp32_value(h[i]), scale);
      out[i] = kAccumulate ? out[i] + v : v;
    }
  }
};

template <class Format>
class ScaledBlockCodec final : public Codec {
 public:
  ScaledBlockCodec(CodecKind kind, int64_t block) : kind_(kind), block_(block) {}

  CodecKind kind() const override {
    return kind_;
  }
  int64_t block() const override {
    return block_;
  }

  int64_t encodedBytes(int64_t n) const override {
    checkElementCount(n);
    return alignedWireBytes(scaledBytesUsed<Format>(n, block_));
  }

  void encode(const float* in, int64_t n, uint8_t* out, const EncodeOptions& options) const override {
    forEachBlock(n, [&](int64_t b, int64_t begin, int64_t len) {
      const BlockScan scan = scanBlock(in + begin, len);
      float scale = 0.0f;
      float inverse = 0.0f;
      if (scan.nonFinite) {
        scale = std::numeric_limits<float>::quiet_NaN();
      } else if (scan.absmax >= kTinyBlock) {
        Format::scales(scan.absmax, scale, inverse);
      }
      storeScale(out, b, scale);
      uint8_t* blockPayload = out + payloadOffset<Format>(blocks(n), begin);
      if (inverse == 0.0f) {  // the scale alone decides the decoded values
        std::fill_n(blockPayload, Format::payloadBytes(len), uint8_t{0});
      } else {
        Format::encode(in + begin, len, inverse, blockPayload, options, begin);
      }
    });
    // The alignment padding, so that the wire bytes are fully determined.
    std::fill(out + scaledBytesUsed<Format>(n, block_), out + encodedBytes(n), uint8_t{0});
  }

  void decode(const uint8_t* in, int64_t n, float* out) const override {
    decodeInto<false>(in, n, out);
  }

  void decodeAdd(const uint8_t* in, int64_t n, float* acc) const override {
    decodeInto<true>(in, n, acc);
  }

 private:
  int64_t blocks(int64_t n) const {
    return blockCount(n, block_);
  }

  // Calls fn(block index, first element, length) for every block, blocks spread over
  // ATen's intra-op threads in tasks of at least ~64K elements.
  template <class Fn>
  void forEachBlock(int64_t n, const Fn& fn) const {
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / block_);
    at::parallel_for(0, blocks(n), grain, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) {
        const int64_t begin = b * block_;
        fn(b, begin, std::min(block_, n - begin));
      }
    });
  }

  template <bool kAccumulate>
  void decodeInto(const uint8_t* in, int64_t n, float* out) const {
    forEachBlock(n, [&](int64_t b, int64_t begin, int64_t len) {
      Format::template decode<kAccumulate>(in + payloadOffset<Format>(blocks(n), begin), len, loadScale(in, b), out + begin);
    });
  }

  const CodecKind kind_;
  const int64_t block_;
};

} // namespace

std::unique_ptr<Codec> makeFp16Codec(int64_t block) {
  return std::make_unique<ScaledBlockCodec<Fp16Format>>(CodecKind::Fp16, block);
}

std::unique_ptr<Codec> makeInt8Codec(int64_t block) {
  return std::make_unique<ScaledBlockCodec<Int8Format>>(CodecKind::Int8, block);
}

std::unique_ptr<Codec> makeInt4Codec(int64_t block) {
  return std::make_unique<ScaledBlockCodec<Int4Format>>(CodecKind::Int4, block);
}

} // namespace qccl::codec
