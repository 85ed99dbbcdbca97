#pragma once

// Whether a peer's process still lives, so that a rank waiting on a dead peer raises
// instead of waiting out the timeout.
//
// A pidfd (pidfd_open, Linux 5.3) names the process itself, not its number: it turns
// readable when that process exits (a zombie counts as exited) and never refers to a
// later process that reuses the pid. Where pidfd_open is missing or refused, kill(pid, 0)
// serves, which cannot tell a reused pid or a zombie from the peer (then the timeout
// still bounds the wait). Pids only mean something in one pid namespace, which is why
// hostIdentity() includes it.

#include <sys/types.h>

namespace qccl::shm {

class PeerProcess {
 public:
  PeerProcess() = default;
  explicit PeerProcess(pid_t pid); // throws DistBackendError if the process is gone
  PeerProcess(PeerProcess&& other) noexcept;
  PeerProcess& operator=(PeerProcess&& other) noexcept;
  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;
  ~PeerProcess();

  // False once the process has exited. This process itself is always alive.
  bool alive() const;
  pid_t pid() const {
    return pid_;
  }

 private:
  pid_t pid_ = 0;
  int pidfd_ = -1;
};

} // namespace qccl::shm
