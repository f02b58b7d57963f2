// Primitives for busy-waiting: a cheap monotonic clock and the CPU's
// spin-loop hint. Shared by the channel's spin-then-sleep waits and by the
// benchmarks' raw spin floors, so both spin the same way.
#ifndef SLUICE_IPC_SYNC_SPIN_H_
#define SLUICE_IPC_SYNC_SPIN_H_

#include <time.h>

#include <cstdint>

namespace sluice {

// CLOCK_MONOTONIC in nanoseconds (vDSO: no syscall).
inline int64_t MonotonicNanos() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Tells the CPU we are spinning (x86 PAUSE, Arm YIELD): saves power and
// lets a sibling hyperthread run.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Asks for the cache line at `address` in a writable state ahead of the
// first store to it, so that taking it from the peer's cache (which read it
// last) overlaps other work instead of stalling that store.
inline void PrefetchForWrite(const void* address) { __builtin_prefetch(address, 1, 3); }

}  // namespace sluice

#endif  // SLUICE_IPC_SYNC_SPIN_H_
