#pragma once

// The codec names users write (QCCL_CODEC, qccl.Options(codec=...)). Here, below both
// the configuration and the codecs, so that neither has to include the other.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qccl {

enum class CodecKind : uint8_t { None, Fp16, Bf16, Int8, Int4 };

// "none", "fp16", ... in the order of CodecKind.
const std::vector<std::string>& codecNames();
std::string_view codecName(CodecKind kind);
std::optional<CodecKind> parseCodecName(std::string_view name);

// Valid quantization blocks: multiples of 8 in [kMinBlock, kMaxBlock] (int4 packs pairs,
// and whole bytes per block keep every block's payload byte-aligned).
constexpr int64_t kMinBlock = 8;
constexpr int64_t kMaxBlock = 1 << 20;
constexpr bool validBlock(int64_t block) {
  return block >= kMinBlock && block <= kMaxBlock && block % 8 == 0;
}

} // namespace qccl
