#include "qccl/common/build_info.h"

namespace qccl {

#ifndef QCCL_WITH_CUDA
bool builtWithCuda() {
  return false;
}

bool cudaSelfTest() {
  return false;
}
#endif

} // namespace qccl
