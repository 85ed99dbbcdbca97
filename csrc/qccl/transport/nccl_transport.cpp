#include "qccl/transport/nccl_transport.h"

#include "qccl/common/errors.h"

namespace qccl {

void NcclTransport::waitFor(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  try {
    work->wait();  // a stream wait, unless TORCH_NCCL_BLOCKING_WAIT asks for a host wait
  } catch (const std::exception&) {
    throwCommError(failureMessage(what, rank(), std::current_exception()));
  }
}

} // namespace qccl
