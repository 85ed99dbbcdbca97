#pragma once

// Creates the CPU transport from C++: a ProcessGroupGloo on the group's store. Python
// creates the same object through torch (qccl/_registration.py); C++ programs have no
// Python, so qccl::createBackend comes here.

#include <chrono>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace qccl {

// How many of a group's collectives Gloo runs at once (its default is 2). qccl's worker
// starts a group's calls without waiting for the previous one (docs/design.md), and on a
// high-latency link each call spends most of its time waiting for round trips: a burst
// of DDP buckets ends sooner the more of them are on the wire together, and a compressed
// all-reduce keeps up to 30 transfers on the wire (algo/compressed_allreduce.h). Python's
// creator reads it too (qccl._C.GLOO_THREADS).
constexpr int kGlooThreads = 32;

// A ProcessGroupGloo over `store` (callers pass a prefixed one: the group's other
// transports share the store). Devices come from GLOO_SOCKET_IFNAME when it is set, as
// for torch's own Gloo groups, else from this host's name (loopback as the fallback).
c10::intrusive_ptr<c10d::Backend> makeGlooBackend(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    std::chrono::milliseconds timeout);

} // namespace qccl
