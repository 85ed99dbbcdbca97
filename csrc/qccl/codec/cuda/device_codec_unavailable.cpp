// The CPU flavour's stand-ins for the codec kernels: they say what is missing.

#include "qccl/codec/cuda/device_codec.h"

#ifndef QCCL_WITH_CUDA

#include "qccl/common/errors.h"

namespace qccl::codec::cuda {
namespace {

void unavailable() {
  QCCL_CHECK_SUPPORTED(false, "this qccl build has no CUDA code (qccl.has_cuda() is False); rebuild it where "
                       "torch has CUDA and nvcc exists to encode on the GPU");
}

} // namespace

void encode(CodecKind, int64_t, const float*, int64_t, uint8_t*, const EncodeOptions&, void*) {
  unavailable();
}

void decode(CodecKind, int64_t, const uint8_t*, int64_t, float*, bool, void*) {
  unavailable();
}

} // namespace qccl::codec::cuda

#endif
