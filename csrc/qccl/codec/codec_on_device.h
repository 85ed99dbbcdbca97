#pragma once

// The one place that decides which codec runs where the data is: the CUDA kernels on the
// device's current stream (cuda/stream_codec.h), or the CPU codec (codec.h). Both write
// the same wire format, so either end of a transfer may use either.

#include <memory>

#include <c10/core/Device.h>

#include "qccl/codec/codec.h"

namespace qccl::codec {

// Null for CodecKind::None. Raises ValueError for an invalid block, as makeCodec does.
std::unique_ptr<Codec> makeCodecOn(const c10::Device& device, CodecKind kind, int64_t block);

} // namespace qccl::codec
