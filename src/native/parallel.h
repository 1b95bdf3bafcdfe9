// What the native kernels share: the thread split, the dtype check, the aot entry point.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace packrun {

// As many threads as this process may run on (sched_getaffinity: a taskset, cgroup or Slurm
// binding is honoured); PACKRUN_NATIVE_THREADS overrides (benchmarks).
inline int Threads() {
  if (const char *env = std::getenv("PACKRUN_NATIVE_THREADS")) return std::max(1, std::atoi(env));
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

// fn(begin, end) over [0, count), in chunks the threads take in turn from a shared counter:
// a thread that is slowed down (MindSpore's idle kernel threads spin-yield on the other core
// while a Custom op runs; other processes) leaves its share to the others instead of holding
// up the whole op, as an even split would. Chunks of about a sixteenth of a thread's share.
template <typename Fn>
void ParallelFor(int64_t count, Fn fn) {
  const int64_t threads = std::min<int64_t>(Threads(), count);
  if (threads <= 1) {
    if (count > 0) fn(int64_t{0}, count);
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, count / (threads * 16));
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    for (;;) {
      const int64_t begin = next.fetch_add(chunk);
      if (begin >= count) return;
      fn(begin, std::min(count, begin + chunk));
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto &th : pool) th.join();
}

inline bool IsFloat(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }

}  // namespace packrun

// The signature MindSpore's aot Custom operators call (mindspore.ops.Custom).
#define PACKRUN_EXPORT(NAME, IMPL)                                                         \
  extern "C" int NAME(int nparam, void **params, int *ndims, int64_t **shapes,             \
                      const char **dtypes, void * /*stream*/, void * /*extra*/) {          \
    return IMPL(nparam, params, ndims, shapes, dtypes);                                    \
  }

