#pragma once

// Where a group's transports keep their keys: a prefix of the group's store that no
// earlier creation of a group on that store used, agreed by all ranks.
//
// Why: under torchrun every restart of a job gets the same store (the agent's TCPStore
// lives as long as the job) and the same key prefix for each group ("default_pg/0/cpu/"),
// so the previous attempt's keys are still there. Gloo's full-mesh connect reads each
// peer's address from the store; a rank that reads before its peer has overwritten the
// old one connects to a dead address, and hangs or fails. docs/design.md ("Restarts")
// explains the handshake and why nothing simpler is safe.

#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

namespace qccl {

// Returns "qccl/<n>/", n unique to this creation (a counter on `store`, drawn by rank 0).
// Every rank of the group calls it with the same store and size; it returns on every rank
// once rank 0 knows that all ranks have the same n. Requires that the ranks of an earlier
// creation on this store are gone (a restart replaces all of them), not that they finished.
// Raises DistBackendError naming the missing ranks after `timeout`.
std::string agreeOnFreshPrefix(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    std::chrono::milliseconds timeout);

} // namespace qccl
