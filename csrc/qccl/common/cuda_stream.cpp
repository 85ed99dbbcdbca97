#include "qccl/common/cuda_stream.h"

#include "qccl/common/errors.h"

#ifdef QCCL_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace qccl {

void* currentCudaStream(const c10::Device& device) {
#ifdef QCCL_WITH_CUDA
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
#else
  QCCL_CHECK_SUPPORTED(false, "this qccl build has no CUDA code (qccl.has_cuda() is False); got a tensor on ",
                       device.str());
  return nullptr;
#endif
}

} // namespace qccl
