#pragma once

// The wire codecs of the compressed allreduce: how float32 values become bytes and back.
// Pure CPU code on plain arrays, no torch.distributed: the algorithm (algo/) decides
// what to encode; the transport never sees a codec.
//
// Wire formats (n elements, block B = Options::block, scales are float32):
//   fp16: per block a power-of-two scale, then n float16 values (x / scale)
//   bf16: n bfloat16 values, round to nearest even (no scale: bf16 has fp32's range)
//   int8: per block scale = absmax / 127, then n int8 values round(x / scale)
//   int4: per block scale = absmax / 7, then ceil(n/2) bytes of two int4 values each
// All scales come first, then the payload. Decoding is `value * scale`, one IEEE multiply
// per element, so the same bytes decode to the same bits on every rank and in every code
// path (vector body or scalar tail). A block that holds NaN or Inf gets a NaN scale and
// decodes to NaN; a block whose largest magnitude is below kTinyBlock (including an
// all-zero block) gets scale 0 and decodes to exact zeros.

#include <cstdint>
#include <memory>

#include "qccl/common/codec_kind.h"

namespace qccl::codec {

// Blocks whose largest magnitude is below this decode to zeros: their inverse scale
// would overflow float32, and their values are far below any gradient that matters.
constexpr float kTinyBlock = 1e-30f;

// The most elements one codec call takes; their wire size stays far inside int64_t.
constexpr int64_t kMaxElements = int64_t{1} << 56;
// Raises ValueError unless 0 <= n <= kMaxElements.
void checkElementCount(int64_t n);

struct EncodeOptions {
  // Stochastic rounding: round up with probability equal to the fraction dropped, so the
  // codec is unbiased. The random numbers are a hash of (seed, element index), so the
  // same seed gives the same bytes.
  bool stochastic = false;
  uint64_t seed = 0;
};

class Codec {
 public:
  virtual ~Codec() = default;

  virtual CodecKind kind() const = 0;
  // Elements per block: the algorithm cuts shards at block boundaries.
  virtual int64_t block() const = 0;
  // Bytes that n elements take on the wire: depends only on n and the configuration.
  // Raises ValueError for a negative or too large n (checkElementCount).
  virtual int64_t encodedBytes(int64_t n) const = 0;
  // Writes exactly encodedBytes(n) bytes to `out`.
  virtual void encode(const float* in, int64_t n, uint8_t* out, const EncodeOptions& options) const = 0;
  // Reads exactly encodedBytes(n) bytes; any byte pattern is valid input.
  virtual void decode(const uint8_t* in, int64_t n, float* out) const = 0;
  // acc[i] += decoded[i], for summing contributions without a temporary.
  virtual void decodeAdd(const uint8_t* in, int64_t n, float* acc) const = 0;
};

// nullptr for CodecKind::None. Raises ValueError for an invalid block.
std::unique_ptr<Codec> makeCodec(CodecKind kind, int64_t block);

} // namespace qccl::codec
