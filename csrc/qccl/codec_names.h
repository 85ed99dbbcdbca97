#pragma once

// Public (installed as include/qccl/codec_names.h): the codec names qccl::Options and
// the QCCL_CODEC / QCCL_P2P_CODEC variables accept. docs/algorithms.md describes each.

namespace qccl::codecs {

inline constexpr const char* kNone = "none";  // exact: no compression
inline constexpr const char* kFp16 = "fp16";  // IEEE half, per-block power-of-two scale
inline constexpr const char* kBf16 = "bf16";  // bfloat16
inline constexpr const char* kInt8 = "int8";  // 8-bit integers, per-block scale
inline constexpr const char* kInt4 = "int4";  // 4-bit integers, per-block scale (all-reduce only)

} // namespace qccl::codecs
