#include "qccl/common/errors.h"

namespace qccl {

void throwCommError(const std::string& message) {
  C10_THROW_ERROR(DistBackendError, "qccl: " + message);
}

std::exception_ptr makeCommError(const std::string& message) {
  try {
    throwCommError(message);
  } catch (...) {
    return std::current_exception();
  }
}

std::string failureMessage(const std::string& what, int rank, const std::exception_ptr& cause) {
  return what + " failed on rank " + std::to_string(rank) + ": " + describeException(cause);
}

std::string timedOutMessage(const std::string& what, int rank, int64_t milliseconds, const std::string& why) {
  return what + " on rank " + std::to_string(rank) + ": Timed out after " + std::to_string(milliseconds) + " ms (" +
      why + ")";
}

std::string describeCause(const std::exception_ptr& error) {
  const std::string prefix = "qccl: ";
  auto text = describeException(error);
  return text.rfind(prefix, 0) == 0 ? text.substr(prefix.size()) : text;
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
