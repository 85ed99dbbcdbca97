#pragma once

// Sets up a group's shared-memory channel through its store, at creation (issue 28):
//   1. every rank publishes its hostIdentity(); the group uses shared memory only when
//      every rank's is the same (ranks on several hosts keep the network);
//   2. every rank creates its segment and publishes its name, or that /dev/shm could not
//      hold it; one rank that could not makes every rank fall back to the network, with
//      one warning naming the size needed;
//   3. every rank maps every peer's segment, then removes its own name from /dev/shm.
// Every rank reads what every rank wrote, so all decide alike. Keys go under the group's
// store, which has a prefix of this creation's own (transport/fresh_prefix.h).

#include <chrono>
#include <cstdint>
#include <memory>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "qccl/transport/shm/channel.h"

namespace qccl::shm {

// The group's channel, or null when its ranks are not all on this host or /dev/shm is too
// small (then the group runs over the network, as before).
std::unique_ptr<Channel> connectOnOneHost(
    c10d::Store& store,
    int rank,
    int size,
    uint64_t slotBytes,
    std::chrono::milliseconds timeout);

} // namespace qccl::shm
