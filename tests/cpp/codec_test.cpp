// Each codec against float64 arithmetic: round-trip error bounds, exact zeros, NaN/Inf,
// odd sizes, stochastic rounding, and decoding arbitrary bytes inside guard pages so that
// any out-of-bounds access crashes the test.

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <random>
#include <vector>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "qccl/codec/codec.h"

namespace qccl::codec {
namespace {

constexpr int64_t kBlock = 256;

std::vector<float> gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = dist(gen);
  }
  return v;
}

std::vector<float> roundTrip(const Codec& codec, const std::vector<float>& in, EncodeOptions options = {}) {
  const int64_t n = static_cast<int64_t>(in.size());
  std::vector<uint8_t> bytes(codec.encodedBytes(n));
  codec.encode(in.data(), n, bytes.data(), options);
  std::vector<float> out(n);
  codec.decode(bytes.data(), n, out.data());
  return out;
}

double relativeL2(const std::vector<float>& ref, const std::vector<float>& got) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    norm += double(ref[i]) * ref[i];
  }
  return std::sqrt(err / norm);
}

struct CodecCase {
  CodecKind kind;
  double maxRelativeL2;  // one quantization stage, Gaussian data
};

class EveryCodec : public ::testing::TestWithParam<CodecCase> {
 protected:
  std::unique_ptr<Codec> codec = makeCodec(GetParam().kind, kBlock);
};

TEST_P(EveryCodec, RoundTripErrorIsBoundedOnGaussianData) {
  const auto in = gaussian(100003, 1);
  EXPECT_LT(relativeL2(in, roundTrip(*codec, in)), GetParam().maxRelativeL2);
}

TEST_P(EveryCodec, ScaleInvariant) {
  // Blockwise scales: the relative error does not depend on the data's magnitude.
  for (float sigma : {1e-6f, 1e6f}) {
    const auto in = gaussian(4096, 2, sigma);
    EXPECT_LT(relativeL2(in, roundTrip(*codec, in)), GetParam().maxRelativeL2) << "sigma " << sigma;
  }
}

TEST_P(EveryCodec, AllZeroBlocksDecodeToExactZeros) {
  std::vector<float> in(3 * kBlock + 5, 0.0f);
  for (int64_t i = kBlock; i < 2 * kBlock; ++i) {
    in[i] = 1.0f + static_cast<float>(i);  // one non-zero block between zero blocks
  }
  const auto out = roundTrip(*codec, in);
  for (int64_t i = 0; i < static_cast<int64_t>(in.size()); ++i) {
    if (in[i] == 0.0f) {
      ASSERT_EQ(out[i], 0.0f) << "element " << i;
    }
  }
}

TEST_P(EveryCodec, NonFiniteValuesDecodeToNonFinite) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    auto in = gaussian(2 * kBlock, 3);
    in[kBlock + 17] = bad;
    const auto out = roundTrip(*codec, in);
    EXPECT_FALSE(std::isfinite(out[kBlock + 17])) << "input " << bad;
    for (int64_t i = 0; i < kBlock; ++i) {
      ASSERT_TRUE(std::isfinite(out[i])) << "a block without NaN/Inf stays finite";
    }
  }
}

TEST_P(EveryCodec, OddSizesWriteExactlyTheirElements) {
  for (int64_t n : {int64_t{1}, int64_t{7}, kBlock - 1, kBlock + 1, 3 * kBlock + 13}) {
    const auto in = gaussian(n, 4);
    std::vector<uint8_t> bytes(codec->encodedBytes(n) + 16, 0xAB);
    codec->encode(in.data(), n, bytes.data(), {});
    for (size_t i = codec->encodedBytes(n); i < bytes.size(); ++i) {
      ASSERT_EQ(bytes[i], 0xAB) << "encode wrote past its " << codec->encodedBytes(n) << " bytes, n=" << n;
    }
    std::vector<float> out(n + 4, 42.0f);
    codec->decode(bytes.data(), n, out.data());
    for (int64_t i = n; i < n + 4; ++i) {
      ASSERT_EQ(out[i], 42.0f) << "decode wrote past its " << n << " elements";
    }
    EXPECT_LT(relativeL2(in, std::vector<float>(out.begin(), out.begin() + n)), 2 * GetParam().maxRelativeL2);
  }
  EXPECT_EQ(codec->encodedBytes(0), 0);
}

TEST_P(EveryCodec, DecodeAddAccumulatesTheDecodedValues) {
  const auto in = gaussian(1000, 5);
  std::vector<uint8_t> bytes(codec->encodedBytes(1000));
  codec->encode(in.data(), 1000, bytes.data(), {});
  std::vector<float> decoded(1000);
  codec->decode(bytes.data(), 1000, decoded.data());
  std::vector<float> acc(1000, 0.5f);
  codec->decodeAdd(bytes.data(), 1000, acc.data());
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(acc[i], 0.5f + decoded[i]);
  }
}

TEST_P(EveryCodec, StochasticRoundingIsReproducibleAndUnbiased) {
  const int64_t n = 512;
  const auto in = gaussian(n, 6);
  EncodeOptions a{true, 11};
  EXPECT_EQ(roundTrip(*codec, in, a), roundTrip(*codec, in, a)) << "same seed, same result";
  // Averaged over many seeds, the decoded values approach the input much closer than
  // one rounding does.
  std::vector<double> mean(n, 0.0);
  const int draws = 400;
  for (int s = 0; s < draws; ++s) {
    const auto out = roundTrip(*codec, in, EncodeOptions{true, static_cast<uint64_t>(s)});
    for (int64_t i = 0; i < n; ++i) {
      mean[i] += out[i] / static_cast<double>(draws);
    }
  }
  std::vector<float> meanF(mean.begin(), mean.end());
  if (codec->kind() != CodecKind::Fp16) {  // fp16 always rounds to nearest
    EXPECT_LT(relativeL2(in, meanF), GetParam().maxRelativeL2 / 4);
  }
}

// A buffer that ends right before an inaccessible page (and starts right after one), so
// that reading or writing past either end faults.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t bytes) : page_(sysconf(_SC_PAGESIZE)) {
    dataPages_ = (bytes + page_ - 1) / page_ + 1;
    total_ = (dataPages_ + 2) * page_;
    base_ = static_cast<uint8_t*>(mmap(nullptr, total_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    mprotect(base_, page_, PROT_NONE);
    mprotect(base_ + (dataPages_ + 1) * page_, page_, PROT_NONE);
    data_ = base_ + (dataPages_ + 1) * page_ - bytes;
  }
  ~GuardedBuffer() {
    munmap(base_, total_);
  }
  uint8_t* data() {
    return data_;
  }

 private:
  size_t page_, dataPages_, total_;
  uint8_t* base_;
  uint8_t* data_;
};

TEST_P(EveryCodec, DecodingArbitraryBytesStaysInBounds) {
  std::mt19937 gen(7);
  for (int64_t n : {int64_t{1}, int64_t{9}, kBlock + 3, int64_t{70001}}) {
    const int64_t bytes = codec->encodedBytes(n);
    GuardedBuffer in(bytes);
    for (int64_t i = 0; i < bytes; ++i) {
      in.data()[i] = static_cast<uint8_t>(gen());
    }
    GuardedBuffer out(n * sizeof(float));
    auto* values = reinterpret_cast<float*>(out.data());
    codec->decode(in.data(), n, values);
    codec->decodeAdd(in.data(), n, values);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Codecs,
    EveryCodec,
    ::testing::Values(
        CodecCase{CodecKind::Fp16, 3e-4},
        CodecCase{CodecKind::Bf16, 3e-3},
        CodecCase{CodecKind::Int8, 1e-2},
        CodecCase{CodecKind::Int4, 0.2}),
    [](const auto& info) { return std::string(codecName(info.param.kind)); });

TEST(Fp16Codec, LargeFiniteValuesStayFinite) {
  auto codec = makeCodec(CodecKind::Fp16, kBlock);
  std::vector<float> in(kBlock, 1e9f);
  in[3] = -3e38f;
  const auto out = roundTrip(*codec, in);
  for (size_t i = 0; i < in.size(); ++i) {
    ASSERT_TRUE(std::isfinite(out[i])) << in[i] << " overflowed";
  }
  EXPECT_NEAR(out[3] / in[3], 1.0, 1e-3);
}

TEST(MakeCodec, RejectsInvalidBlocks) {
  EXPECT_THROW(makeCodec(CodecKind::Int8, 12), c10::ValueError);
  EXPECT_THROW(makeCodec(CodecKind::Int8, 0), c10::ValueError);
  EXPECT_EQ(makeCodec(CodecKind::None, kBlock), nullptr);
}

} // namespace
} // namespace qccl::codec
