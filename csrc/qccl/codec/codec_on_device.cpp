#include "qccl/codec/codec_on_device.h"

#include "qccl/codec/cuda/stream_codec.h"
#include "qccl/common/cuda_stream.h"

namespace qccl::codec {

std::unique_ptr<Codec> makeCodecOn(const c10::Device& device, CodecKind kind, int64_t block) {
  if (kind == CodecKind::None) {
    return nullptr;
  }
  if (device.is_cuda()) {
    return std::make_unique<cuda::StreamCodec>(kind, block, currentCudaStream(device));
  }
  return makeCodec(kind, block);
}

} // namespace qccl::codec
