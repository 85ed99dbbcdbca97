#include "qccl/transport/shm/peer_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "qccl/common/errors.h"

namespace qccl::shm {
namespace {

bool exists(pid_t pid) {
  return kill(pid, 0) == 0 || errno != ESRCH; // EPERM: it exists, as another user's
}

} // namespace

PeerProcess::PeerProcess(pid_t pid) : pid_(pid) {
  if (pid == getpid()) {
    return; // ranks as threads of one process: nothing to watch
  }
#ifdef SYS_pidfd_open
  pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd_ < 0 && errno == ESRCH) {
    throwCommError("shared memory: the process " + std::to_string(pid) + " of a peer rank has exited");
  }
#endif
  if (pidfd_ < 0 && !exists(pid)) {
    throwCommError("shared memory: the process " + std::to_string(pid) + " of a peer rank has exited");
  }
}

PeerProcess::PeerProcess(PeerProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, 0)), pidfd_(std::exchange(other.pidfd_, -1)) {}

PeerProcess& PeerProcess::operator=(PeerProcess&& other) noexcept {
  if (this != &other) {
    if (pidfd_ >= 0) {
      close(pidfd_);
    }
    pid_ = std::exchange(other.pid_, 0);
    pidfd_ = std::exchange(other.pidfd_, -1);
  }
  return *this;
}

PeerProcess::~PeerProcess() {
  if (pidfd_ >= 0) {
    close(pidfd_);
  }
}

bool PeerProcess::alive() const {
  if (pid_ == 0 || pid_ == getpid()) {
    return true;
  }
  if (pidfd_ >= 0) {
    struct pollfd entry {pidfd_, POLLIN, 0};
    int ready;
    do {
      ready = poll(&entry, 1, 0);
    } while (ready < 0 && errno == EINTR);
    return ready == 0; // readable: the process has exited
  }
  return exists(pid_);
}

} // namespace qccl::shm
