#include "qccl/transport/gloo_factory.h"

// ProcessGroupGloo.hpp sits behind USE_C10D_GLOO, and includes Gloo headers that torch
// wheels do not ship: the build puts gloo_declarations/ on the include path (searched
// last) to stand in for them. Its README says why that is sound.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "qccl/common/errors.h"

namespace qccl {

c10::intrusive_ptr<c10d::Backend> makeGlooBackend(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    std::chrono::milliseconds timeout) {
  QCCL_CHECK_VALUE(size > 0 && rank >= 0 && rank < size, "rank ", rank, " is not in a group of size ", size);
  // create_default: the devices torch's Python ProcessGroupGloo(store, rank, size) picks.
  auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
  options->timeout = timeout;
  options->threads = kGlooThreads;
  try {
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  } catch (const std::exception&) {
    throwCommError(failureMessage("connecting the Gloo transport", rank, std::current_exception()));
  }
}

} // namespace qccl
