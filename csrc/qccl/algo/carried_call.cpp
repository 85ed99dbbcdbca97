#include "qccl/algo/carried_call.h"

#include <algorithm>

namespace qccl::algo {

int64_t inlineBytesPerCheck(int worldSize) {
  constexpr int64_t kReceivedPerCheck = 64 << 10;
  constexpr int64_t kLeast = 64;
  const int64_t share = kReceivedPerCheck / std::max(worldSize - 1, 1) / 8 * 8;
  return std::clamp(share, kLeast, kMaxInlineBytes);
}

} // namespace qccl::algo
