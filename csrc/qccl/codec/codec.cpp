#include "qccl/codec/codec.h"

#include "qccl/codec/codec_impls.h"
#include "qccl/common/errors.h"

namespace qccl::codec {

void checkElementCount(int64_t n) {
  QCCL_CHECK_VALUE(
      n >= 0 && n <= kMaxElements, "a codec cannot take ", n, " elements (from 0 to ", kMaxElements, ")");
}

std::unique_ptr<Codec> makeCodec(CodecKind kind, int64_t block) {
  QCCL_CHECK_VALUE(
      validBlock(block), "block=", block, " is not valid; use a multiple of 8 from ", kMinBlock,
      " to ", kMaxBlock);
  switch (kind) {
    case CodecKind::None:
      return nullptr;
    case CodecKind::Fp16:
      return makeFp16Codec(block);
    case CodecKind::Bf16:
      return makeBf16Codec(block);
    case CodecKind::Int8:
      return makeInt8Codec(block);
    case CodecKind::Int4:
      return makeInt4Codec(block);
  }
  QCCL_CHECK_VALUE(false, "unknown codec kind ", static_cast<int>(kind));
  return nullptr;  // unreachable
}

} // namespace qccl::codec
