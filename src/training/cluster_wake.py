"""Waking the processes of a MindSpore cluster from MindSpore's fixed sleeps.

Two sleeps of MindSpore 2.10's dynamic cluster (msrun, and packrun's mpirun on CPU) are
constants, not settings, and cost every run on this path seconds of nothing:

- MCCL, the CPU collective: each worker, once the cluster is built, publishes its address and
  then reads its peers'; a peer not published yet costs a `sleep(3)` before the next look
  (ms_collective_node.cc, SynchronizeAddresses). Every rank but the last to publish sleeps.
- The scheduler waits for the workers to leave in a loop that looks every 5 s
  (cluster_context.cc, ClusterContext::Finalize: `interval = 5`): on average 2.5 s after the
  last worker has gone, msrun still waits for its scheduler.

Both are plain `sleep()` calls in the process's main thread, which a signal with a handler
interrupts; the loop then looks again at once. So:

- `prepare()` (before `init()`, in each process that `wakes`: the scheduler, and on CPU the
  ranks): a handler that does nothing for WAKE_SIGNAL (SIGWINCH, ignored by default: a wake
  that comes before the handler, or to a process without it, does nothing).
- `wake_peers(run_dir)` (each CPU rank, right after `init()` returned): wakes the other ranks
  of this machine, found by their pid files (logs/worker_<rank>.pid) and checked to be
  processes of this run directory. Their next look finds every address.
- `wake_scheduler_when_workers_leave(run_dir)` (the scheduler, before `init()`): starts a small
  process (`python -m src.training.cluster_wake RUN_DIR SCHEDULER_PID`; a thread would never
  run: the scheduler's `init()` holds the interpreter's lock until the cluster ends) that
  waits until each worker of this run it saw alive on this machine is leaving (has written its
  exit file, logs/worker_<rank>.exit, or is gone: a worker leaves the cluster in its teardown,
  after that file), then wakes the scheduler every half second until it ends (a signal sent to
  a process goes to its main thread when that thread does not block it). Its loop then ends
  within half a second of the last worker leaving. (Before that, nothing is woken, so
  MindSpore's counted retries keep their timeouts.)

Nothing here changes what MindSpore does, only when it looks again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from launcher.core.paths import importable
from launcher.core.rundir.names import LOGS, WAKE_SIGNAL_NAME, worker_exit

WAKE_SIGNAL = signal.Signals[WAKE_SIGNAL_NAME]
SCHEDULER_WAKE_PERIOD_S = 0.5
POLL_S = 0.2


def wakes(env, device: str) -> bool:
    """Whether this process of a collective takes part: the scheduler on any device (its
    finalize poll is the same everywhere), a rank only on CPU (MCCL's address poll; a rank on an
    Ascend or GPU card joins through HCCL or NCCL, which do not poll that way, and is never
    signalled)."""
    return env.get("MS_ROLE") == "MS_SCHED" or device == "CPU"


def prepare() -> None:
    """Let WAKE_SIGNAL interrupt this process's sleeps (main thread only: Python's rule)."""
    signal.signal(WAKE_SIGNAL, lambda signum, frame: None)


def _run_workers(run_dir: Path) -> dict[int, tuple[int, psutil.Process]]:
    """{pid: (rank, process)} of the live processes of this machine named by run_dir's worker
    pid files that are processes of run_dir (their command line names it), this one excepted."""
    found = {}
    for pid_file in (run_dir / LOGS).glob("worker_*.pid"):
        try:
            rank = int(pid_file.stem.removeprefix("worker_"))
            pid = int(pid_file.read_text().strip())
            if pid == os.getpid():
                continue
            p = psutil.Process(pid)
            if str(run_dir) in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
                found[pid] = (rank, p)
        except (ValueError, OSError, psutil.Error):
            continue
    return found


def wake_peers(run_dir: Path) -> int:
    """Wake the other workers of run_dir on this machine; how many were woken."""
    woken = 0
    for _, p in _run_workers(Path(run_dir)).values():
        try:
            p.send_signal(WAKE_SIGNAL)
            woken += 1
        except psutil.Error:
            continue
    return woken


def wake_scheduler_when_workers_leave(run_dir: Path) -> subprocess.Popen:
    """Start the scheduler's waker (see the module's docstring) for this process."""
    return subprocess.Popen([sys.executable, "-m", "src.training.cluster_wake", str(run_dir),
                             str(os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, env=importable())


def wake_when_workers_leave(run_dir: Path, scheduler: int,
                            period_s: float = SCHEDULER_WAKE_PERIOD_S,
                            poll_s: float = POLL_S) -> None:
    """The waker's work: returns when process `scheduler` is gone."""
    seen: dict[int, tuple[int, psutil.Process]] = {}
    while psutil.pid_exists(scheduler):
        seen.update(_run_workers(run_dir))
        if seen and all(_leaving(run_dir, rank, p) for rank, p in seen.values()):
            break
        time.sleep(poll_s)
    while psutil.pid_exists(scheduler):
        try:
            os.kill(scheduler, WAKE_SIGNAL)
        except OSError:
            return
        time.sleep(period_s)


def _leaving(run_dir: Path, rank: int, p: psutil.Process) -> bool:
    """Whether worker `p` (rank `rank`) has ended its work: gone, or its exit file written
    since it started."""
    try:
        if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
            return True
        return (run_dir / worker_exit(rank)).stat().st_mtime >= p.create_time()
    except (OSError, psutil.Error):
        return not p.is_running()


if __name__ == "__main__":
    wake_when_workers_leave(Path(sys.argv[1]), int(sys.argv[2]))
