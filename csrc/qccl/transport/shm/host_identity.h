#pragma once

// Which ranks may share memory: two processes can use one shared-memory segment only if
// they run on one kernel (boot id), see the same /dev/shm (its device) and the same
// System V / POSIX IPC namespace, and can tell whether each other's process is alive
// (one pid namespace: the channel watches peers by pid). The network namespace and the
// hostname are in it too: ranks in different network namespaces are different hosts by
// qccl's rule (netlab emulates nodes that way), even where memory could be shared.
//
// Never derived from LOCAL_WORLD_SIZE or rank arithmetic: a subgroup's ranks may sit on
// any hosts. Each rank publishes its identity through the group's store; ranks with equal
// strings are on one host.

#include <string>

namespace qccl::shm {

// A string equal for two processes exactly when they may share memory (above). Stable
// for the life of the process unless it changes namespaces. Never throws: a fact that
// cannot be read is written as "?", which still compares equal only to itself.
std::string hostIdentity();

} // namespace qccl::shm
