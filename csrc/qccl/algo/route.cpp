#include "qccl/algo/route.h"

namespace qccl::algo {

const char* routeName(Route route) {
  switch (route) {
    case Route::Compressed:
      return "compressed";
    case Route::ExactCodecNone:
      return "codec_none";
    case Route::ExactForced:
      return "forced_exact";
    case Route::ExactDtype:
      return "dtype";
    case Route::ExactReduceOp:
      return "reduce_op";
    case Route::ExactSmall:
      return "below_min_bytes";
    case Route::ExactNoSaving:
      return "no_byte_saving";
    case Route::kCount:
      break;
  }
  return "unknown";
}

bool compressibleDtype(c10::ScalarType type) {
  return type == c10::kFloat || type == c10::kHalf || type == c10::kBFloat16;
}

} // namespace qccl::algo
