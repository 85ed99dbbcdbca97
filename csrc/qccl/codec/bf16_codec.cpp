// bf16: the upper 16 bits of each float32, rounded. No scale: bfloat16 has float32's
// exponent range, so nothing overflows and NaN/Inf stay NaN/Inf.

#include <algorithm>

#include <ATen/Parallel.h>

#include "qccl/codec/codec_impls.h"
#include "qccl/codec/counter_rng.h"
#include "qccl/codec/element_ops.h"
#include "qccl/codec/wire_format.h"

namespace qccl::codec {
namespace {

constexpr int64_t kGrain = int64_t{1} << 16;

class Bf16Codec final : public Codec {
 public:
  // bf16 has no scales; the block only aligns the algorithm's shards.
  explicit Bf16Codec(int64_t block) : block_(block) {}

  CodecKind kind() const override {
    return CodecKind::Bf16;
  }
  int64_t block() const override {
    return block_;
  }

  int64_t encodedBytes(int64_t n) const override {
    checkElementCount(n);
    return alignedWireBytes(bf16BytesUsed(n));
  }

  void encode(const float* in, int64_t n, uint8_t* out, const EncodeOptions& options) const override {
    auto* h = reinterpret_cast<uint16_t*>(out);
    at::parallel_for(0, n, kGrain, [&](int64_t first, int64_t last) {
      if (options.stochastic) {
        for (int64_t i = first; i < last; ++i) {
          h[i] = bf16Stochastic(in[i], randomBits(options.seed, static_cast<uint64_t>(i)));
        }
      } else {
        for (int64_t i = first; i < last; ++i) {
          h[i] = bf16Nearest(in[i]);
        }
      }
    });
    std::fill(out + bf16BytesUsed(n), out + encodedBytes(n), uint8_t{0});
  }

  void decode(const uint8_t* in, int64_t n, float* out) const override {
    decodeInto<false>(in, n, out);
  }

  void decodeAdd(const uint8_t* in, int64_t n, float* acc) const override {
    decodeInto<true>(in, n, acc);
  }

 private:
  template <bool kAccumulate>
  void decodeInto(const uint8_t* in, int64_t n, float* out) const {
    const auto* h = reinterpret_cast<const uint16_t*>(in);
    at::parallel_for(0, n, kGrain, [&](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i) {
        const float v = bf16Value(h[i]);
        out[i] = kAccumulate ? out[i] + v : v;
      }
    });
  }

  const int64_t block_;
};

} // namespace

std::unique_ptr<Codec> makeBf16Codec(int64_t block) {
  return std::make_unique<Bf16Codec>(block);
}

} // namespace qccl::codec
