#pragma once

// What this build of qccl contains. The CUDA flavour compiles codec/cuda/*.cu and
// defines QCCL_WITH_CUDA; the CPU flavour links the fallbacks in build_info.cpp.

namespace qccl {

bool builtWithCuda();

// Runs a trivial kernel on the current device and checks its result. False when qccl
// was built without CUDA or no GPU is visible.
bool cudaSelfTest();

} // namespace qccl
