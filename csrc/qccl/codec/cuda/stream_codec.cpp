#include "qccl/codec/cuda/stream_codec.h"

#include "qccl/codec/cuda/device_codec.h"
#include "qccl/common/errors.h"

namespace qccl::codec::cuda {

StreamCodec::StreamCodec(CodecKind kind, int64_t block, void* stream)
    : sizes_(makeCodec(kind, block)), stream_(stream) {
  QCCL_CHECK_VALUE(sizes_, "codec 'none' has no kernels");
}

void StreamCodec::encode(const float* in, int64_t n, uint8_t* out, const EncodeOptions& options) const {
  cuda::encode(kind(), block(), in, n, out, options, stream_);
}

void StreamCodec::decode(const uint8_t* in, int64_t n, float* out) const {
  cuda::decode(kind(), block(), in, n, out, /*accumulate=*/false, stream_);
}

void StreamCodec::decodeAdd(const uint8_t* in, int64_t n, float* acc) const {
  cuda::decode(kind(), block(), in, n, acc, /*accumulate=*/true, stream_);
}

} // namespace qccl::codec::cuda
