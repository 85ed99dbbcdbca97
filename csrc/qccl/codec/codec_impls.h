#pragma once

// The concrete codecs behind makeCodec() (codec.cpp). Private to codec/.

#include <memory>

#include "qccl/codec/codec.h"

namespace qccl::codec {

std::unique_ptr<Codec> makeBf16Codec(int64_t block);
std::unique_ptr<Codec> makeFp16Codec(int64_t block);
std::unique_ptr<Codec> makeInt8Codec(int64_t block);
std::unique_ptr<Codec> makeInt4Codec(int64_t block);

} // namespace qccl::codec
