// What the native kernels share: the thread split, the dtype check, the aot entry point.
#pragma once

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
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

// The helper threads, made once per process and asleep between ops. A thread made per op
// and joined made the op wait for it even when it had not yet run: under load the new thread
// sat in the run queue, and with 2 threads the native kernels took longer than with one
// (profiler, load ~6: Custom ops 113 ms a step against 76 ms on one thread).
class Helpers {
 public:
  // Runs work() on up to `extra` helper threads while the caller works too; work() returns
  // when no chunk is left. Returns once no helper is inside work(). A helper that wakes after
  // the caller has finished finds the job closed and never touches it, so the caller does not
  // wait for a helper the scheduler has not run (it may be queued behind other processes).
  template <typename Work>
  void Run(int64_t extra, Work &work) {
    auto job = std::make_shared<Job>();
    job->work = [&work]() { work(); };
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int64_t>(threads_.size()) < extra) threads_.emplace_back([this] { Loop(); });
      job_ = job;
      ++generation_;
      wanted_ = extra;
    }
    wake_.notify_all();
    work();
    job->closed.store(true);
    while (job->active.load() > 0) std::this_thread::yield();
  }

  // The process's helpers. Never destroyed: its threads sleep until the process exits. A
  // forked child gets fresh ones (the parent's threads do not exist there, and its mutex may
  // have been held at the fork).
  static Helpers &Instance() { return *Slot(); }

 private:
  static Helpers *&Slot() {
    static Helpers *helpers = [] {
      pthread_atfork(nullptr, nullptr, [] { Slot() = new Helpers(); });
      return new Helpers();
    }();
    return helpers;
  }

  struct Job {
    std::function<void()> work;
    std::atomic<int> active{0};
    std::atomic<bool> closed{false};
  };

  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen && wanted_ > 0; });
        seen = generation_;
        --wanted_;
        job = job_;
      }
      job->active.fetch_add(1);
      if (!job->closed.load()) job->work();
      job->active.fetch_sub(1);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> threads_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
  int64_t wanted_ = 0;
};

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
  Helpers::Instance().Run(threads - 1, work);
}

inline bool IsFloat(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }

}  // namespace packrun

// The signature MindSpore's aot Custom operators call (mindspore.ops.Custom).
#define PACKRUN_EXPORT(NAME, IMPL)                                                         \
  extern "C" int NAME(int nparam, void **params, int *ndims, int64_t **shapes,             \
                      const char **dtypes, void * /*stream*/, void * /*extra*/) {          \
    return IMPL(nparam, params, ndims, shapes, dtypes);                                    \
  }

