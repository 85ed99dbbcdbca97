#include "qccl/p2p/payload_codec.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include "qccl/codec/codec_on_device.h"
#include "qccl/common/tensor_bytes.h"

namespace qccl::p2p {
CodecKind payloadCodec(const Config& config, const at::Tensor& tensor) {
  const auto dtype = tensor.scalar_type();
  const bool compressible = dtype == at::kFloat || dtype == at::kDouble;
  return compressible && tensor.numel() >= config.block ? config.p2pCodec : CodecKind::None;
}

at::Tensor encodePayload(const at::Tensor& tensor, CodecKind codec, int64_t block) {
  if (codec == CodecKind::None) {
    return asBytes(tensor);
  }
  c10::DeviceGuard onItsDevice(tensor.device());  // the kernels launch on the current device
  auto values = tensor.to(at::kFloat).contiguous();
  auto coder = codec::makeCodecOn(tensor.device(), codec, block);
  const int64_t n = values.numel();
  auto out = at::empty({coder->encodedBytes(n)}, tensor.options().dtype(at::kByte));
  coder->encode(values.const_data_ptr<float>(), n, out.mutable_data_ptr<uint8_t>(), {});
  return out;
}

void decodePayload(const at::Tensor& payload, CodecKind codec, int64_t block, at::Tensor& out) {
  if (codec == CodecKind::None) {
    asBytes(out).copy_(payload);
    return;
  }
  c10::DeviceGuard onItsDevice(out.device());
  auto coder = codec::makeCodecOn(out.device(), codec, block);
  const bool direct = out.scalar_type() == at::kFloat;
  auto values = direct ? out : at::empty({out.numel()}, out.options().dtype(at::kFloat));
  coder->decode(payload.const_data_ptr<uint8_t>(), out.numel(), values.mutable_data_ptr<float>());
  if (!direct) {
    out.view({-1}).copy_(values);
  }
}

} // namespace qccl::p2p
