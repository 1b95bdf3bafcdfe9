"""The stall watchdog every supervisor runs (`packrun run`, `debug`, `node-launch`, the Slurm
batch program; a multi-node launch calls the same hook): it reads every rank's progress record
(logs/worker_<rank>.progress), feeds them to the decision logic (launcher/supervise/stall.py) and,
on a stall,
  1. asks every rank on this host for the Python stacks of all its threads: the worker registered
     faulthandler on STACK_SIGNAL (names.py) with logs/worker_<rank>.stack, so the dump is written
     by the interpreter's C signal handler even while Python code is blocked; where py-spy is
     installed its native frames (`py-spy dump --native`) are appended. A rank that has not
     answered within ANSWER_S (frozen by SIGSTOP, in the kernel) is named with its process state,
     and the teardown goes on;
  2. builds the failure record's `stall` entry: the silence and its bound, each rank's last
     progress and stage, whether it answered and its stack's top frame, and the rank that differs
     from the others (stall.odd_rank);
and hands it back; the supervisor then tears the launch down and ends the attempt like any
failure (exit status EXIT_STALLED, restarted within max_restarts).

Two ways to run it: `Watchdog.check()` from a supervisor's own polling loop (Supervisor, the batch
program), or `watching(watchdog, stop)`, a thread that calls `stop()` after a stall, around a
blocking wait (debug, node-launch, a multi-node launch).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psutil

from launcher.core.log import get_logger
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.names import (
    EXIT_STALLED,
    STACK_SIGNAL_NAME,
    attempt_logs,
    worker_pid,
    worker_stack,
)
from launcher.core.rundir.progress import Progress, read_all_progress
from launcher.core.spec import JobSpec
from launcher.supervise.stall import Answer, Stall, StallWatch, odd_rank, top_frame

log = get_logger(__name__)

ANSWER_S = 5.0     # how long a rank has to write its stacks
SETTLE_S = 0.3     # a dump is complete when its file has not grown for this long
PY_SPY_S = 20.0    # py-spy's time for all ranks together
CHECK_EVERY_S = 1.0


def sink_effective(spec: JobSpec) -> bool:
    """Whether the workers run in sink mode (src/train.py effective_settings: never on CPU)."""
    return spec.sink_mode and spec.device != "CPU"


@dataclass
class StallReport:
    """A stall, explained: `rank` (the one that differs; None: none does), `reason` (one line),
    `record` (failure.json's `stall` entry)."""
    rank: int | None
    reason: str
    record: dict = field(default_factory=dict)


class Watchdog:
    """The watchdog of one attempt in `run_dir`: `world` ranks, bounds from `spec`."""

    def __init__(self, run_dir: Path, spec: JobSpec, attempt: int | None, world: int,
                 clock: Callable[[], float] = time.monotonic):
        self.run_dir, self.spec, self.attempt, self.clock = Path(run_dir), spec, attempt, clock
        self.watch = StallWatch(world, spec.stall_timeout, spec.startup_timeout, clock(),
                                sink=sink_effective(spec), attempt=attempt)

    @classmethod
    def for_run(cls, run_dir: Path, attempt: int | None, world: int | None = None) -> "Watchdog":
        """The watchdog of attempt `attempt` of the run in `run_dir` with its job's bounds
        (job.json), expecting `world` ranks (default: every rank of the job, nodes x
        cards_per_node): the one-line hook of a launch that has no spec at hand."""
        spec = spec_from_json(Path(run_dir))
        return cls(run_dir, spec, attempt, world or spec.nodes * spec.cards_per_node)

    @property
    def enabled(self) -> bool:
        return self.watch.enabled

    def check(self) -> Stall | None:
        """Look at the records once; the Stall when the job has stalled."""
        if not self.enabled:
            return None
        return self.watch.feed(read_all_progress(self.run_dir), self.clock())

    def report(self, stall: Stall) -> StallReport:
        """Ask for the stacks and explain the stall (the launch is still running)."""
        log.error(f"packrun: stalled: {stall.describe()}; asking every rank for its stacks "
                  f"({', '.join(worker_stack(r) for r in stall.last)})")
        answers = ask_stacks(self.run_dir, stall)
        rank, why = odd_rank(stall.last, answers)
        reason = stall.describe() + (f"; rank {rank} differs: {why}" if rank is not None
                                     else f"; {why}")
        per_rank = []
        for r, p in stall.last.items():
            a = answers.get(r, Answer(False, state="not asked"))
            stack = worker_stack(r) if self.attempt is None else \
                f"{attempt_logs(self.attempt)}/{Path(worker_stack(r)).name}"
            per_rank.append(dict(
                rank=r, stage=p.stage.value if p else None, where=p.where() if p else "no record",
                epoch=p.epoch if p else None, step=p.step if p else None,
                eval_batch=p.eval_batch if p else None, pid=p.pid if p else None,
                answered=a.answered, state=a.state, top_frame=top_frame(a.text), stack=stack))
        record = dict(silent_s=round(stall.silent_s, 1), bound_s=stall.bound_s,
                      bound=stall.bound_name, rank=rank, why=why, per_rank=per_rank)
        return StallReport(rank, reason, record)


def _local_process(run_dir: Path, rank: int, record: Progress | None) -> psutil.Process | str:
    """Rank `rank`'s worker process on this host, or why there is none ("gone", "not on this
    host"): its pid from its progress record or pid file, checked by its command line (the run
    directory is one of its arguments)."""
    pid = record.pid if record else None
    if pid is None:
        try:
            pid = int((run_dir / worker_pid(rank)).read_text().strip())
        except (OSError, ValueError):
            return "no pid"
    try:
        p = psutil.Process(pid)
        if str(run_dir) in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
            return p
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return "not on this host"


def _state(p: psutil.Process) -> str:
    try:
        return {psutil.STATUS_STOPPED: "stopped (SIGSTOP)", psutil.STATUS_TRACING_STOP: "stopped",
                psutil.STATUS_DISK_SLEEP: "in the kernel (uninterruptible sleep)",
                psutil.STATUS_ZOMBIE: "gone"}.get(p.status(), p.status())
    except psutil.NoSuchProcess:
        return "gone"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def ask_stacks(run_dir: Path, stall: Stall, answer_s: float = ANSWER_S) -> dict[int, Answer]:
    """Signal every local rank for its stacks, wait for the dumps (at most `answer_s`), append
    py-spy's native frames where py-spy is installed; each rank's Answer."""
    run_dir = Path(run_dir)
    sig = signal.Signals[STACK_SIGNAL_NAME]
    asked: dict[int, tuple[psutil.Process, int]] = {}
    answers: dict[int, Answer] = {}
    for rank, record in stall.last.items():
        p = _local_process(run_dir, rank, record)
        if isinstance(p, str):
            answers[rank] = Answer(False, state=p)
            continue
        path = run_dir / worker_stack(rank)
        _append(path, f"\n=== packrun stall watchdog: {stall.describe()}; {STACK_SIGNAL_NAME} to "
                      f"pid {p.pid} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ===\n")
        offset = _size(path)
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            answers[rank] = Answer(False, state="gone")
            continue
        asked[rank] = (p, offset)
    deadline = time.monotonic() + answer_s
    sizes: dict[int, tuple[int, float]] = {}
    while asked.keys() - answers.keys() and time.monotonic() < deadline:
        for rank, (_, offset) in asked.items():
            if rank in answers:
                continue
            size = _size(run_dir / worker_stack(rank))
            seen, since = sizes.get(rank, (offset, time.monotonic()))
            if size != seen:
                sizes[rank] = (size, time.monotonic())
            elif size > offset and time.monotonic() - since >= SETTLE_S:
                with open(run_dir / worker_stack(rank), encoding="utf-8", errors="replace") as f:
                    f.seek(offset)
                    answers[rank] = Answer(True, f.read())
        time.sleep(0.05)
    for rank, (p, _) in asked.items():
        if rank not in answers:
            state = _state(p)
            answers[rank] = Answer(False, state=state)
            _append(run_dir / worker_stack(rank),
                    f"packrun: rank {rank} (pid {p.pid}) did not answer within {answer_s:g} s: "
                    f"{state}\n")
            log.error(f"packrun: rank {rank} (pid {p.pid}) did not answer the stack request "
                      f"within {answer_s:g} s: {state}")
    _native_frames(run_dir, {r: p for r, (p, _) in asked.items()})
    return answers


def find_py_spy() -> str | None:
    """py-spy on PATH, or beside this interpreter (a virtual environment's bin/)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


def _native_frames(run_dir: Path, procs: dict[int, psutil.Process]) -> None:
    """`py-spy dump --native --pid P` of every rank at once, appended to its stack file; skipped
    without py-spy, and cut short after PY_SPY_S (a frozen process may never let it attach)."""
    py_spy = find_py_spy()
    if not py_spy or not procs:
        return
    running = {}
    for rank, p in procs.items():
        out = open(run_dir / worker_stack(rank), "a", encoding="utf-8")
        out.write(f"\n=== py-spy dump --native --pid {p.pid} ===\n")
        out.flush()
        running[rank] = (subprocess.Popen([py_spy, "dump", "--native", "--pid", str(p.pid)],
                                          stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL), out)
    deadline = time.monotonic() + PY_SPY_S
    for proc, out in running.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            out.write(f"packrun: py-spy did not finish within {PY_SPY_S:g} s\n")
        out.close()


# ---------------------------------------------------------------------------------------------
# The hook around a blocking wait
# ---------------------------------------------------------------------------------------------

@dataclass
class Watching:
    """What `watching` found: the report of the stall it acted on, or None."""
    report: StallReport | None = None

    def result_fields(self) -> dict:
        """The fields of an attempt's Result (launcher/core/rundir/attempts.py) for the stall."""
        assert self.report is not None
        return dict(code=EXIT_STALLED, rank=self.report.rank, reason=self.report.reason,
                    stall=self.report.record)


@contextmanager
def watching(watchdog: Watchdog | None, stop: Callable[[], None],
             every_s: float = CHECK_EVERY_S) -> Iterator[Watching]:
    """While active, a thread checks `watchdog` every `every_s`; on a stall it reports it (the
    stacks) and calls `stop()` (which should end the launch the caller waits for). None, or a
    watchdog with stall_timeout 0, watches nothing."""
    found = Watching()
    if watchdog is None or not watchdog.enabled:
        yield found
        return
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every_s):
            try:
                stall = watchdog.check()
                if stall is not None:
                    found.report = watchdog.report(stall)
                    stop()
                    return
            except Exception as e:  # noqa: BLE001 - a failing watchdog must not end the job
                log.warning(f"packrun: the stall watchdog failed and is off: {e!r}")
                return

    thread = threading.Thread(target=loop, name="packrun-stall-watchdog", daemon=True)
    thread.start()
    try:
        yield found
    finally:
        done.set()
        if thread is not threading.current_thread():
            thread.join()

