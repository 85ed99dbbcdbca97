#pragma once

// Sets up the shared-memory channel of ranks that share this host (transport/host_layout.h
// says which do) through their store, at creation (issue 28):
//   1. every rank creates its segment and publishes its name, or that /dev/shm could not
//      hold it; one rank that could not makes every rank fall back to the network, with
//      one warning naming the size needed;
//   2. every rank maps every peer's segment, then removes its own name from /dev/shm.
// Every rank reads what every rank wrote, so all decide alike. Keys go under the group's
// store, which has a prefix of this creation's own (transport/fresh_prefix.h).

#include <chrono>
#include <cstdint>
#include <memory>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "qccl/transport/shm/channel.h"
#include "qccl/transport/shm/mailbox.h"

namespace qccl::shm {

// The ranks' channel, or null when /dev/shm is too small (then they keep the network).
std::unique_ptr<Channel> connectSharedMemory(
    c10d::Store& store,
    int rank,
    int size,
    uint64_t slotBytes,
    std::chrono::milliseconds timeout);

// The same for their point-to-point mailboxes (mailbox.h), set up alike.
std::unique_ptr<Mailbox> connectMailbox(
    c10d::Store& store,
    int rank,
    int size,
    uint64_t ringBytes,
    std::chrono::milliseconds timeout);

} // namespace qccl::shm
