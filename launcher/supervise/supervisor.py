"""Watch a launch (msrun.sh, mpirun.sh, rank_table.sh) on this machine until it ends, and end it
as a whole when any part fails: `Supervisor` (`packrun run`), and `supervise_ranks`, which starts
the ranks of one server itself (rank_table.sh hands them over through `python -m launcher.node
supervise-ranks`). Both name the first failing rank the same way (`rank_failure`) and stop what
is left the same way (`stop_processes`: TERM, then KILL after a grace period).

Launchers start workers in sessions of their own (msrun does), so a signal to the launch
script's group does not reach them. The supervisor therefore finds the run's processes by their
command line (the worker script and this run directory), learns each worker's rank from its
environment, and reads the exit status each worker leaves in logs/worker_<rank>.exit. A worker
that is gone without that file was killed. Once every rank has left exit status 0 and is gone,
the launch is ended rather than waited for (msrun's once-a-second look at its workers and its
own MindSpore teardown: 1-2 s of every run). The first failure stops everything: TERM, then KILL
after a grace period; nothing is left behind. So does a stall: with a `watchdog`
(launcher/supervise/watchdog.py) the watch asks every rank for its stacks and stops the launch
when no rank has made progress for stall_timeout seconds (exit status 124, EXIT_STALLED).
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import psutil

from launcher.core import rank_env as ranks
from launcher.core.log import console as log_console
from launcher.core.log import get_logger
from launcher.core.logtail import LogFollower
from launcher.core.rundir import attempts
from launcher.core.rundir.failure import killed_by
from launcher.core.rundir.names import (
    EXIT_REQUEUE,
    EXIT_STALLED,
    LAUNCHER_LOG,
    LOGS,
    RANKS_DIR,
    WORKER_EXIT_GLOB,
    read_exit_status,
    worker_log,
)
from launcher.supervise import processes
from launcher.supervise.watchdog import Watchdog

log = get_logger(__name__)

POLL_S = 0.05        # worker liveness: the first death is the culprit, so look often
DISCOVER_EVERY = 5   # process-table scans and console updates every 0.25 s
KILLED_WAIT_S = 2.5  # how long to wait for the launcher to report a killed worker's signal


@dataclass
class Worker:
    rank: int
    proc: psutil.Process
    exit_code: int | None = None
    done: bool = False


@dataclass
class Outcome:
    code: int
    failed_rank: int | None = None
    reason: str = ""
    workers_seen: list[int] = field(default_factory=list)
    signal: int | None = None      # the signal that killed the failed rank, when known
    rank_exit: int | None = None   # the failed rank's exit status (None: killed)
    user_stop: bool = False        # packrun got SIGINT / SIGTERM
    stall: dict | None = None      # the stall watchdog ended the launch (failure.json's entry)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Supervisor:
    def __init__(self, run_dir: Path, cmd: Sequence[str], worker_script: Path, env: dict,
                 console=None, grace_s: float = processes.GRACE_S, world: int = 0,
                 watchdog: Watchdog | None = None):
        self.run_dir, self.cmd, self.env = Path(run_dir), list(cmd), env
        self.watchdog = watchdog  # the stall watchdog (launcher/supervise/watchdog.py), if any
        self.world = world  # ranks the launch starts (0: unknown; their exit files decide)
        self.marker = (str(worker_script), str(self.run_dir))
        self.console = console or log_console()
        self.grace_s = grace_s
        self.workers: dict[int, Worker] = {}   # by pid
        self.others: dict[int, psutil.Process] = {}  # schedulers and launcher children

    # -- discovery -------------------------------------------------------------------------
    def _discover(self) -> None:
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmdline = p.info["cmdline"] or []
            if p.pid in self.workers or p.pid in self.others:
                continue
            if not self._marked(cmdline):
                continue
            try:
                env = p.environ()
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                continue
            if not ranks.started_as_rank(env):  # msrun itself, or its child before exec
                continue
            rank = ranks.rank_from_env(env)
            try:
                forked = self._forked_by_a_rank(p)
            except psutil.Error:
                # gone while looked at: a rank's child (the `lscpu` MindSpore runs at a rank's
                # start) listed and its environment read while it ran, then reaped before its
                # parent was looked up. Judged a worker, its end reads as that rank killed (CI:
                # a healthy run's failure.json naming rank 0, no signal). A rank gone this early
                # left nothing to watch either: its launcher's end and its peers report it.
                continue
            if rank is None or forked:
                self.others[p.pid] = p
            else:
                self.workers[p.pid] = Worker(rank, p)

    def _marked(self, cmdline: Sequence[str]) -> bool:
        return all(any(m == arg for arg in cmdline) for m in self.marker)

    def _forked_by_a_rank(self, p: psutil.Process) -> bool:
        """Whether `p` is a child of a rank: a subprocess between its fork and its exec (the
        worker runs `g++ --version`, MindSpore `lscpu`) or a subshell of the launch shim
        shows its parent's command line and environment, rank included, and is gone a moment
        later. Judged as a worker, its end would read as that rank being killed.

        Raises psutil.NoSuchProcess when `p` itself has gone since it was listed (psutil.Error
        when it cannot be read, like its environment above)."""
        parent = p.parent()  # reads p's own /proc entry: NoSuchProcess once p is reaped
        if parent is None:
            return False
        if parent.pid in self.workers:
            return True
        try:
            return self._marked(parent.cmdline()) and ranks.started_as_rank(parent.environ())
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # a zombie is NoSuchProcess too
            return False

    def _check_workers(self) -> Worker | None:
        """Mark workers that ended; return the one that failed first.

        Launchers react to a failure by killing the other workers (msrun within a fraction of a
        second), so several may be found dead in one poll. The culprit is then the one that left
        a failing exit status, else the one msrun reports as failed, else the lowest rank."""
        failed = []
        for w in self.workers.values():
            if w.done or _alive(w.proc):
                continue
            w.done = True
            w.exit_code = read_exit_status(self.run_dir, w.rank)
            if w.exit_code not in (0, EXIT_REQUEUE):
                failed.append(w)
        if len(failed) > 1:
            reported = _msrun_failed_pids(self.run_dir / LAUNCHER_LOG)
            failed.sort(key=lambda w: (w.exit_code is None, w.proc.pid not in reported, w.rank))
        return failed[0] if failed else None

    # -- teardown --------------------------------------------------------------------------
    def _everything(self, launcher: psutil.Popen | None) -> list[psutil.Process]:
        procs = [w.proc for w in self.workers.values()] + list(self.others.values())
        if launcher is not None:
            try:
                procs += launcher.children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        return [p for p in {p.pid: p for p in procs}.values() if _alive(p)]

    def stop_all(self, launcher) -> None:
        self._discover()
        stop_processes(self._everything(launcher), [launcher], self.grace_s,
                       stragglers=lambda: self._everything(launcher))
        launcher.wait()

    # -- the watch -------------------------------------------------------------------------
    def run(self) -> Outcome:
        for stale in self.run_dir.glob(WORKER_EXIT_GLOB):
            stale.unlink()
        follower = LogFollower(self.run_dir / worker_log(0), self.console)
        log.debug(f"running {shlex.join(self.cmd)} in {self.run_dir}")
        with open(self.run_dir / LAUNCHER_LOG, "ab") as launcher_log:
            launcher = psutil.Popen(self.cmd, env=self.env, cwd=self.run_dir,
                                    stdout=launcher_log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            with processes.forward_signals([], self.grace_s) as got:
                outcome = self._watch(launcher, follower, got)
        follower.poll(final=True)
        outcome.workers_seen = sorted(w.rank for w in self.workers.values())
        return outcome

    def _watch(self, launcher, follower, got) -> Outcome:
        ticks = 0
        while True:
            if ticks % DISCOVER_EVERY == 0:
                follower.poll()
                self._discover()
                stall = self.watchdog.check() if self.watchdog else None
                if stall is not None:
                    assert self.watchdog is not None
                    report = self.watchdog.report(stall)  # the stacks, before the teardown
                    self.stop_all(launcher)
                    return Outcome(EXIT_STALLED, report.rank, report.reason, stall=report.record)
            ticks += 1
            if got["signal"] is not None:
                self.stop_all(launcher)
                name = signal.Signals(got["signal"]).name
                return Outcome(128 + got["signal"], reason=f"stopped by {name}", user_stop=True)
            failed = self._check_workers()
            if failed is not None:
                sig = self._killed_by(failed)
                self.stop_all(launcher)
                return failed_outcome(failed.rank, failed.exit_code, sig)
            rc = launcher.poll()
            if rc is not None:
                return self._finish(launcher, processes.exit_code(rc))
            if self._work_done():
                # What is left is the launcher's own ending: msrun looks at its workers once a
                # second, then tears its MindSpore down (1-2 s of every run); end it now.
                return self._finish(launcher, 0)
            time.sleep(POLL_S)

    def _work_done(self) -> bool:
        """Every rank of the launch left exit status 0 and this machine's workers are gone:
        the run's work is done and saved (the outcome `_finish` reads from the exit files)."""
        return bool(self.workers) and all(w.done for w in self.workers.values()) and \
            attempts.every_rank_finished(self.run_dir, self.world)

    def _killed_by(self, w: Worker, wait_s: float = KILLED_WAIT_S) -> int | None:
        """A worker gone without an exit status: the signal its launcher reports (msrun looks
        once a second, so wait up to `wait_s` for it to say)."""
        if w.exit_code is not None:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            sig = killed_by([self.run_dir / LAUNCHER_LOG], w.proc.pid)
            if sig is not None or time.monotonic() >= deadline:
                return sig
            time.sleep(0.1)

    def _finish(self, launcher, rc: int) -> Outcome:
        """The launch script ended: its workers' exit files decide."""
        self.stop_all(launcher)  # stragglers (a scheduler, a hung worker) end with it
        failed = self._check_workers()
        if failed is not None:
            return failed_outcome(failed.rank, failed.exit_code,
                                  self._killed_by(failed, wait_s=0))
        codes = {w.exit_code for w in self.workers.values()}
        if self.workers and codes == {EXIT_REQUEUE}:
            return Outcome(EXIT_REQUEUE, reason="stopped on request; start again to resume")
        if rc != 0 and attempts.every_rank_finished(self.run_dir, self.world):
            log.warning(attempts.finished_anyway(f"the launch script exited with status {rc}"))
            return Outcome(0)
        if rc != 0:
            return Outcome(rc, reason=f"the launch script exited with status {rc}")
        if not self.workers:
            return Outcome(1, reason="the launch script ended without starting any worker")
        return Outcome(0)


def rank_failure(rank: int, exit_code: int | None, sig: int | None) -> str:
    """How a rank failed, in the words every supervisor uses: its exit status, or the signal
    that killed it (None: a rank gone without an exit status, signal unknown)."""
    if exit_code is not None:
        return f"rank {rank} exited with status {exit_code}"
    if sig:
        return f"rank {rank} was killed by signal {sig} ({signal.Signals(sig).name})"
    return f"rank {rank} was killed"


def stop_processes(procs: Sequence[psutil.Process], groups: Sequence = (),
                   grace_s: float = processes.GRACE_S, stragglers=None) -> None:
    """The one teardown: SIGTERM the process groups of `groups` (Popen children started in
    sessions of their own) and every process of `procs`, SIGKILL what is left after `grace_s`
    (and whatever `stragglers()` finds then: processes started meanwhile)."""
    for g in groups:
        processes.kill_group(g, signal.SIGTERM)
    for p in procs:
        _signal(p, signal.SIGTERM)
    alive = processes.wait_gone(procs, grace_s)
    for g in groups:
        processes.kill_group(g, signal.SIGKILL)
    for p in alive + (list(stragglers()) if stragglers else []):
        _signal(p, signal.SIGKILL)
    processes.wait_gone(alive, 5)


def failed_outcome(rank: int, exit_code: int | None, sig: int | None,
                   code: int | None = None) -> Outcome:
    """The outcome of a launch whose rank `rank` failed (exit status `exit_code`, or killed by
    `sig`); its exit status `code`, by default the rank's (1 when it has none)."""
    return Outcome(code if code is not None else exit_code or 1, rank,
                   rank_failure(rank, exit_code, sig), signal=sig, rank_exit=exit_code)


# --------------------------------------------------------------------------------------------
# The ranks of one server, started here (rank_table.sh)
# --------------------------------------------------------------------------------------------

def supervise_ranks(run_dir: Path, commands: Sequence[tuple[int, Sequence[str]]],
                    env: dict | None = None, grace_s: float = processes.GRACE_S,
                    stderr=None) -> Outcome:
    """Start each rank's command, (rank, argv), in RUN_DIR/ranks/<rank>/ with its output in
    logs/worker_<rank>.log, each in a process group of its own, and watch them to their end.
    The first rank that fails (a non-zero exit status other than 75, or a signal) is named on
    `stderr` with its log, stops the others at once (TERM, then KILL after `grace_s`) and its
    status is the outcome. Ranks that stop on request (75) let the others finish their step:
    the outcome is then 75. SIGINT / SIGTERM stop every rank: 128 + the signal."""
    run_dir = Path(run_dir)
    stderr = stderr or sys.stderr
    procs: dict[int, subprocess.Popen] = {}
    (run_dir / LOGS).mkdir(exist_ok=True)
    try:
        for rank, cmd in commands:
            cwd = run_dir / RANKS_DIR / str(rank)
            cwd.mkdir(parents=True, exist_ok=True)
            with open(run_dir / worker_log(rank), "wb") as out:
                procs[rank] = processes.spawn(cmd, env=env, cwd=cwd, stdout=out)
        return _watch_ranks(run_dir, procs, grace_s, stderr)
    finally:
        for proc in procs.values():  # nothing outlives the supervisor
            if proc.poll() is None:
                processes.stop(proc, grace_s)
            processes.kill_group(proc, signal.SIGKILL)  # a rank's leftover helpers


def _watch_ranks(run_dir: Path, procs: dict[int, subprocess.Popen], grace_s: float,
                 stderr) -> Outcome:
    code = 0
    running = dict(procs)
    with processes.forward_signals(list(procs.values()), grace_s) as got:
        while running:
            if got["signal"] is not None:  # forward_signals stops them: wait for the end
                for proc in running.values():
                    proc.wait()
                name = signal.Signals(got["signal"]).name
                return Outcome(128 + got["signal"], reason=f"stopped by {name}", user_stop=True)
            for rank, proc in sorted(running.items()):
                if proc.poll() is None:
                    continue
                del running[rank]
                status = processes.exit_code(proc.returncode)
                if status == EXIT_REQUEUE:
                    code = EXIT_REQUEUE
                elif status != 0:
                    sig = -proc.returncode if proc.returncode < 0 else None
                    outcome = failed_outcome(rank, None if sig else status, sig, code=status)
                    print(f"packrun: {outcome.reason}; log: {run_dir / worker_log(rank)}; "
                          "stopping the other ranks of this node", file=stderr, flush=True)
                    others = list(running.values())
                    stop_processes(_with_children(others), others, grace_s)
                    for other in others:
                        other.wait()
                    return outcome
            time.sleep(POLL_S)
    return Outcome(code, reason="stopped on request; start again to resume"
                   if code == EXIT_REQUEUE else "")


def _with_children(procs: Sequence[subprocess.Popen]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for proc in procs:
        try:
            p = psutil.Process(proc.pid)
            found += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return found


def _msrun_failed_pids(launcher_log: Path) -> set[int]:
    """pids msrun logged as "Worker process <pid> exit with exception"."""
    try:
        text = launcher_log.read_text(errors="replace")
    except FileNotFoundError:
        return set()
    return {int(m) for m in re.findall(r"Worker process (\d+) exit with exception", text)}




def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass

