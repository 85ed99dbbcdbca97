#pragma once

// Sleeping on, and waking, a 32-bit word of a shared segment (futex(2), the non-private
// form: the word is shared between processes), and the CPU's spin-wait hint.

#include <chrono>
#include <cstdint>

namespace qccl::shm {

// Sleeps while *word == expected, at most `timeout`; returns on a wake-up, a timeout, a
// signal or a changed word alike: callers re-check their condition.
void futexWait(uint32_t* word, uint32_t expected, std::chrono::nanoseconds timeout);

// Wakes every process sleeping on `word`.
void futexWakeAll(uint32_t* word);

// Tells the core that this thread spins (pause / yield): the sibling hyperthread runs
// faster and the spin costs less power.
inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

// A change of a header's counters, as its waiters see it: bumps seq (so a sleeper that
// read the old value cannot go to sleep on it) and wakes sleepers if there are any. The
// seq_cst pair (bump, then read waiters) mirrors the sleeper's (count itself in, then
// read seq): one of the two always sees the other, so no wake-up is lost, and a publish
// with nobody asleep costs no system call.
void notifyChange(uint32_t& seq, uint32_t& waiters);

} // namespace qccl::shm
