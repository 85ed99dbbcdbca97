#pragma once

// The caller's current CUDA stream, as the opaque handle the codec kernels take. Work
// enqueued there runs after everything the caller enqueued before, as NCCL users expect.

#include <c10/core/Device.h>

namespace qccl {

// A cudaStream_t. Raises in a build without CUDA.
void* currentCudaStream(const c10::Device& device);

} // namespace qccl
