#pragma once

// The error policy (docs/errors.md) in code: every qccl error message starts with
// "qccl: ". The exception type tells Python users what went wrong:
//   QCCL_CHECK_VALUE -> ValueError   (sizes, counts, ranks, layout)
//   QCCL_CHECK_TYPE  -> TypeError    (dtype or reduce op the operation cannot take)
//   QCCL_CHECK_SUPPORTED -> NotImplementedError (valid request this build cannot serve)
//   throwCommError   -> torch.distributed.DistBackendError (the network or a peer failed)

#include <cstdint>
#include <string>

#include <c10/util/Exception.h>

#define QCCL_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, "qccl: ", __VA_ARGS__)
#define QCCL_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, "qccl: ", __VA_ARGS__)
#define QCCL_CHECK_SUPPORTED(cond, ...) \
  TORCH_CHECK_NOT_IMPLEMENTED(cond, "qccl: ", __VA_ARGS__)

namespace qccl {

// Raises torch.distributed.DistBackendError with a "qccl: " prefix.
[[noreturn]] void throwCommError(const std::string& message);

// The same error as an exception_ptr, for failing Works and futures without throwing.
std::exception_ptr makeCommError(const std::string& message);

// "<what> failed on rank <rank>: <the cause's message>".
std::string failureMessage(const std::string& what, int rank, const std::exception_ptr& cause);

// "<what> on rank <rank>: Timed out after <ms> ms (<why>)": worded with Gloo's " Timed
// out " (tools and tests match it), after the "qccl: " prefix as always.
std::string timedOutMessage(const std::string& what, int rank, int64_t milliseconds, const std::string& why);

// The message of an exception without the C++ backtrace c10 appends.
std::string describeException(const std::exception_ptr& error);

// The same without a leading "qccl: ": a cause, to quote inside another qccl message.
std::string describeCause(const std::exception_ptr& error);

} // namespace qccl
