#pragma once

// The codecs on the GPU. Same wire format as the CPU codecs (codec.h) and, because both
// are built from the per-element steps in element_ops.h, the same bytes and the same
// decoded values for the same input: a CPU rank and a GPU rank can exchange encoded
// buffers, and tests check the kernels against the CPU codecs byte for byte.
//
// Pointers are device pointers; the work is enqueued on `stream` (a cudaStream_t, kept
// opaque so that callers compile without the CUDA headers) and nothing waits for it.
// `out` and `in` encoded buffers must be 4-byte aligned, as the algorithm's segments are.
// In a build without CUDA these raise (qccl::builtWithCuda() says which build this is).

#include <cstdint>

#include "qccl/codec/codec.h"

namespace qccl::codec::cuda {

// Writes exactly makeCodec(kind, block)->encodedBytes(n) bytes to `out`.
void encode(CodecKind kind, int64_t block, const float* in, int64_t n, uint8_t* out, const EncodeOptions& options,
            void* stream);

// out[i] = decoded[i], or out[i] += decoded[i] when `accumulate`.
void decode(CodecKind kind, int64_t block, const uint8_t* in, int64_t n, float* out, bool accumulate, void* stream);

} // namespace qccl::codec::cuda
