#pragma once

// A Codec whose encode/decode run the GPU kernels (device_codec.h) on one CUDA stream:
// pointers are device pointers, and every call only enqueues work. The compressed
// allreduce takes a Codec, so with this one it runs on CUDA tensors unchanged.

#include <memory>

#include "qccl/codec/codec.h"

namespace qccl::codec::cuda {

class StreamCodec : public Codec {
 public:
  // `stream` is a cudaStream_t (opaque here); raises ValueError like makeCodec.
  StreamCodec(CodecKind kind, int64_t block, void* stream);

  CodecKind kind() const override {
    return sizes_->kind();
  }
  int64_t block() const override {
    return sizes_->block();
  }
  int64_t encodedBytes(int64_t n) const override {
    return sizes_->encodedBytes(n);
  }
  void encode(const float* in, int64_t n, uint8_t* out, const EncodeOptions& options) const override;
  void decode(const uint8_t* in, int64_t n, float* out) const override;
  void decodeAdd(const uint8_t* in, int64_t n, float* acc) const override;

 private:
  std::unique_ptr<Codec> sizes_;  // the CPU codec of the same kind: the wire format's sizes
  void* stream_;
};

} // namespace qccl::codec::cuda
