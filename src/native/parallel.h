// What the native kernels share: the thread split, the dtype check, the aot entry point.
#pragma once

#include <sched.h>

#include <algorithm>
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

// fn(begin, end) over [0, count), split in contiguous chunks over the threads.
template <typename Fn>
void ParallelFor(int64_t count, Fn fn) {
  int64_t threads = std::min<int64_t>(Threads(), count);
  if (threads <= 1) {
    fn(int64_t{0}, count);
    return;
  }
  std::vector<std::thread> pool;
  int64_t chunk = (count + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    int64_t begin = t * chunk, end = std::min(count, begin + chunk);
    if (begin < end) pool.emplace_back(fn, begin, end);
  }
  fn(int64_t{0}, std::min(count, chunk));
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

