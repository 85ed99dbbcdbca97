#include "qccl/transport/shm/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>

namespace qccl::shm {

void futexWait(uint32_t* word, uint32_t expected, std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) {
    return;
  }
  struct timespec relative {};
  relative.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
  relative.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
  // FUTEX_WAIT (not ..._PRIVATE): sleepers and wakers are different processes.
  syscall(SYS_futex, word, FUTEX_WAIT, expected, &relative, nullptr, 0);
}

void futexWakeAll(uint32_t* word) {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void notifyChange(uint32_t& seq, uint32_t& waiters) {
  std::atomic_ref<uint32_t>(seq).fetch_add(1, std::memory_order_seq_cst);
  if (std::atomic_ref<uint32_t>(waiters).load(std::memory_order_seq_cst) != 0) {
    futexWakeAll(&seq);
  }
}

} // namespace qccl::shm
