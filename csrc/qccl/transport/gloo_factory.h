#pragma once

// Creates the CPU transport from C++: a ProcessGroupGloo on the group's store. Python
// creates the same object through torch (qccl/_registration.py); C++ programs have no
// Python, so qccl::createBackend comes here.

#include <chrono>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace qccl {

// A ProcessGroupGloo over `store` (callers pass a prefixed one: the group's other
// transports share the store). Devices come from GLOO_SOCKET_IFNAME when it is set, as
// for torch's own Gloo groups, else from this host's name (loopback as the fallback).
c10::intrusive_ptr<c10d::Backend> makeGlooBackend(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int size,
    std::chrono::milliseconds timeout);

} // namespace qccl
