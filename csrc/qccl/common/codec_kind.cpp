#include "qccl/common/codec_kind.h"

namespace qccl {

const std::vector<std::string>& codecNames() {
  static const std::vector<std::string> names{"none", "fp16", "bf16", "int8", "int4"};
  return names;
}

std::string_view codecName(CodecKind kind) {
  return codecNames().at(static_cast<size_t>(kind));
}

std::optional<CodecKind> parseCodecName(std::string_view name) {
  const auto& names = codecNames();
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) {
      return static_cast<CodecKind>(i);
    }
  }
  return std::nullopt;
}

} // namespace qccl
