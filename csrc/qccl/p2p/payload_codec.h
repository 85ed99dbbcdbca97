#pragma once

// Which codec a point-to-point payload travels with, and the encoding itself. Both sides
// decide from their own tensor and settings with the same rule, and the header carries
// the sender's choice, so a disagreement is detected, never decoded as garbage.

#include <ATen/core/Tensor.h>

#include "qccl/common/codec_kind.h"
#include "qccl/common/config.h"

namespace qccl::p2p {

// config.p2pCodec for float32 and float64 tensors of at least one block, None otherwise:
// integer tensors, half-precision ones and small control messages (shapes) go exactly.
CodecKind payloadCodec(const Config& config, const at::Tensor& tensor);

// The bytes to send: a view of the tensor for None, an encoded copy otherwise.
at::Tensor encodePayload(const at::Tensor& tensor, CodecKind codec, int64_t block);

// Writes the values `payload` carries into `out` (same numel as the sender's tensor).
void decodePayload(const at::Tensor& payload, CodecKind codec, int64_t block, at::Tensor& out);

} // namespace qccl::p2p
