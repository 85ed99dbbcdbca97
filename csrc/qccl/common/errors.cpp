#include "qccl/common/errors.h"

namespace qccl {

void throwCommError(const std::string& message) {
  C10_THROW_ERROR(DistBackendError, "qccl: " + message);
}

std::string describeException(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

} // namespace qccl
