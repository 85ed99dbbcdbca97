#pragma once

// What the point-to-point protocol says when a message does not fit its receive
// (docs/p2p.md): the receive's error, the Rejected status back to the sender, and the
// error of the sender's later call that reports it.

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "qccl/common/config.h"
#include "qccl/p2p/message.h"
#include "qccl/p2p/p2p_work.h"

namespace qccl::p2p {

// What sender and receiver must agree on, appended to every such error.
extern const char* const kMustAgree;

// " (tag 3)", for a call's name.
std::string tagText(int64_t tag);
// "12 elements of float (codec int8)".
std::string describeMessage(int64_t dtype, int64_t numel, int64_t codec);
// Why `message` does not fit a receive into `tensor` with these settings; empty when it
// does.
std::string mismatch(const Config& config, const Header& message, const at::Tensor& tensor);
// The Rejected status for `message`, with what a receive into `tensor` expected.
Header rejectionReply(const Config& config, const Header& message, const at::Tensor& tensor);
// "send to rank 1 (tag 0) on rank 0 (message #3) was rejected: it carried ... but ...",
// on `rank`, from a Rejected status that `peer` sent.
std::string rejectionText(int rank, int peer, const Header& status);
// The error of `work` on `rank`, which did nothing, reporting these rejections.
std::exception_ptr reportingError(int rank, const P2PWork& work, const std::vector<std::string>& rejections);

} // namespace qccl::p2p
