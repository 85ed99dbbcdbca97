#pragma once

// The concrete codecs behind makeCodec() (codec.cpp). Private to codec/.

#include <memory>

#include "qccl/codec/codec.h"

namespace qccl::codec {

// Encoded sizes are rounded up to 4 bytes, so that segments laid end to end in one buffer
// stay aligned for the float32 scales and float16 payloads.
constexpr int64_t alignedWireBytes(int64_t bytes) {
  return (bytes + 3) / 4 * 4;
}

std::unique_ptr<Codec> makeBf16Codec(int64_t block);
std::unique_ptr<Codec> makeFp16Codec(int64_t block);
std::unique_ptr<Codec> makeInt8Codec(int64_t block);
std::unique_ptr<Codec> makeInt4Codec(int64_t block);

} // namespace qccl::codec
