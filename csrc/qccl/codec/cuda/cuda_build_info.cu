// The CUDA flavour's build facts (common/build_info.h; the CPU flavour's are in
// build_info.cpp): this build has CUDA, and a trivial kernel that proves its device code
// runs on the visible GPU, which tests/python/test_cuda_codecs.py checks before the
// codec kernels (codec_kernels.cu).

#include <cuda_runtime.h>

#include "qccl/common/build_info.h"

namespace qccl {
namespace {

__global__ void addOne(int* value) {
  *value += 1;
}

} // namespace

bool builtWithCuda() {
  return true;
}

bool cudaSelfTest() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  int* value = nullptr;
  if (cudaMalloc(&value, sizeof(int)) != cudaSuccess) {
    return false;
  }
  const int start = 41;
  int result = 0;
  cudaMemcpy(value, &start, sizeof(int), cudaMemcpyHostToDevice);
  addOne<<<1, 1>>>(value);
  cudaMemcpy(&result, value, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(value);
  return result == start + 1;
}

} // namespace qccl
