"""One node's share of a launch over ssh (`packrun run --nodes=N --hosts=...`,
launcher/multinode/run.py), on that node:

    python -m launcher.node host-run RUN_DIR NODE ATTEMPT   the node program
    python -m launcher.node stop-node RUN_DIR NODE          the backstop: stop what it recorded

`host-run` starts the run directory's launch script for node NODE (`msrun.sh NODE` or
`rank_table.sh NODE`, output to logs/node<NODE>.out), records its own pid and the script's
process group in multinode/node<NODE>.json, reports each state change there and as one line on
stdout (started, training, finished / failed / stopped), and watches:
- the session: its stdin is the ssh session's (or the launching packrun's pipe, on the machine
  it runs on); end of input means the session ended (the launching packrun stopped, was
  killed, lost the network), and the node stops;
- SIGINT / SIGTERM / SIGHUP: the node stops;
- the launch script: its end is the node's end (the rank-table supervisor ends when one of its
  ranks dies; msrun only when its scheduler stops hearing from the dead rank, half a minute
  and more later, so:)
- the ranks: one that leaves a failing exit status, or that msrun's output says a signal
  killed, fails the node at once;
- progress: the stall watchdog (launcher/supervise/watchdog.py) over every rank's progress
  record; when no rank has made progress for stall_timeout seconds it asks this node's ranks for
  their stacks, the node stops and reports the stall (exit status 124) with failure.json's
  `stall` entry in its state file.
Stopping is TERM to the script's group and every process it started (tracked as they appear:
msrun's workers run in sessions of their own), KILL after the grace period. A failed node names
its failing rank (its exit status, or the signal its launcher reports) in its state file, for
the launching packrun's failure.json.

`stop-node` is what the launching packrun runs over a fresh ssh connection when a node's session
did not end its processes in time: TERM to the recorded node program, then KILL to it, its
script's group and the processes of the node's ranks.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import psutil

from launcher.core import rank_env
from launcher.core.rank_env import worker_env
from launcher.core.rundir import failure, nodes
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.names import (
    ATTEMPT_ENV,
    EXIT_REQUEUE,
    EXIT_STALLED,
    GRACE_S,
    LAUNCH_SCRIPTS,
    LOGS,
    PREEMPT_FLAG,
    node_out,
    read_exit_status,
    worker_exit,
    worker_pid,
)
from launcher.supervise import processes
from launcher.supervise.supervisor import rank_failure, stop_processes
from launcher.supervise.watchdog import Watchdog

POLL_S = 0.1
FAILED_EVERY = 10  # the ranks' exit files and msrun's output are looked at every 10 polls


class Node:
    def __init__(self, run_dir: Path, node: int, attempt: int, grace_s: float = GRACE_S):
        self.run_dir, self.node, self.attempt, self.grace_s = run_dir, node, attempt, grace_s
        self.spec = spec_from_json(run_dir)
        plan = nodes.read_plan(run_dir) or {}
        hosts = plan.get("hosts") or []
        self.host = hosts[node] if node < len(hosts) else socket.gethostname()
        cards = self.spec.cards_per_node
        self.ranks = range(node * cards, (node + 1) * cards)
        self.tracked: dict[int, psutil.Process] = {}
        self.stop_reason: str | None = None
        self.started_at = time.time()
        self._out_size = -1  # logs/node<NODE>.out's size when last read

    # -- reporting ---------------------------------------------------------------------------
    def say(self, state: str, **fields) -> None:
        doc = nodes.write_node(self.run_dir, self.node, state=state, host=self.host, **fields)
        try:
            print(f"packrun: {nodes.describe(doc)}", flush=True)
        except (BrokenPipeError, OSError):
            self.stop_reason = self.stop_reason or "its session ended"

    # -- watching ----------------------------------------------------------------------------
    def watch_session(self) -> None:
        """End of stdin (a pipe or socket: ssh's session, the launching packrun's pipe) stops
        the node. A terminal or /dev/null is no session: not watched."""
        try:
            mode = os.fstat(0).st_mode
        except OSError:
            return
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return

        def read() -> None:
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            self.stop_reason = self.stop_reason or "its session ended"
        threading.Thread(target=read, daemon=True).start()

    def track(self, proc) -> None:
        try:
            for p in psutil.Process(proc.pid).children(recursive=True):
                self.tracked.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    def started(self, rank: int) -> bool:
        """Whether rank `rank` started in this attempt: its pid file, written since."""
        try:
            return (self.run_dir / worker_pid(rank)).stat().st_mtime >= self.started_at - 1
        except FileNotFoundError:
            return False

    def failed_rank(self) -> tuple[int, int | None, int | None] | None:
        """(rank, exit status, signal) of a rank of this node that failed in this attempt while
        the launch script runs on: it left a failing exit status, or the launcher's output says
        that a signal killed it. None while none has, and after a stop on request (whose ranks
        exit with 75 and msrun kills the others)."""
        codes = {}
        for r in self.ranks:
            try:
                fresh = (self.run_dir / worker_exit(r)).stat().st_mtime >= self.started_at - 1
            except FileNotFoundError:
                fresh = False
            codes[r] = read_exit_status(self.run_dir, r) if fresh else None
        if EXIT_REQUEUE in codes.values() or (self.run_dir / PREEMPT_FLAG).exists():
            return None
        failing = [r for r, c in codes.items() if c not in (None, 0)]
        if failing:
            return failing[0], codes[failing[0]], None
        out = self.run_dir / node_out(self.node)
        try:
            size = out.stat().st_size
            if size == self._out_size:
                return None
            self._out_size = size
            killed = failure.killed_pids(out.read_text(errors="replace"))
        except OSError:
            return None
        found = failure.killed_rank(
            self.run_dir, [r for r, c in codes.items() if c is None and self.started(r)], killed)
        return (found[0], None, found[1]) if found else None

    def ranks_started(self) -> bool:
        return all(self.started(r) for r in self.ranks)

    def stop(self, proc) -> None:
        self.track(proc)
        alive = [p for p in self.tracked.values() if p.is_running()]
        stop_processes(alive, [proc], self.grace_s)
        proc.wait()

    # -- the node ----------------------------------------------------------------------------
    def run(self) -> int:
        script = self.run_dir / LAUNCH_SCRIPTS[self.spec.launcher]
        env = worker_env() | {ATTEMPT_ENV: str(self.attempt)}
        (self.run_dir / LOGS).mkdir(exist_ok=True)

        def asked(signum, _frame):
            self.stop_reason = self.stop_reason or f"stopped by {signal.Signals(signum).name}"
        old = {s: signal.signal(s, asked) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        self.watch_session()
        try:
            with open(self.run_dir / node_out(self.node), "ab") as out:
                proc = processes.spawn(["bash", str(script), str(self.node)], env=env,
                                       cwd=self.run_dir, stdout=out)
            self.say(nodes.STARTED, pid=os.getpid(), pgid=proc.pid, hostname=socket.gethostname(),
                     attempt=self.attempt, rank_ids=list(self.ranks), reason="", rank=None,
                     exit_code=None, signal=None, code=None)
            training, polls = False, 0
            watchdog = Watchdog.for_run(self.run_dir, self.attempt)
            while proc.poll() is None:
                self.track(proc)
                stall = watchdog.check()
                if stall is not None:
                    report = watchdog.report(stall)  # the stacks, before the teardown
                    self.stop(proc)
                    self.say(nodes.FAILED, reason=report.reason, rank=report.rank,
                             exit_code=None, signal=None, code=EXIT_STALLED, stall=report.record)
                    return EXIT_STALLED
                if self.stop_reason:
                    self.stop(proc)
                    self.say(nodes.STOPPED, reason=self.stop_reason, code=128 + signal.SIGTERM)
                    return 128 + signal.SIGTERM
                if not training and self.ranks_started():
                    training = True
                    self.say(nodes.TRAINING)
                polls += 1
                failed = self.failed_rank() if polls % FAILED_EVERY == 0 else None
                if failed is not None:
                    rank, exit_code, sig = failed
                    self.stop(proc)
                    rc = processes.exit_code(proc.returncode) or 1  # never 0: a rank failed
                    self.say(nodes.FAILED, reason=rank_failure(rank, exit_code, sig), rank=rank,
                             exit_code=exit_code, signal=sig, code=rc)
                    return rc
                time.sleep(POLL_S)
            rc = processes.exit_code(proc.returncode)
            self.stop(proc)  # what the script left (a rank's helpers, a hung worker)
            return self.ended(rc)
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def ended(self, rc: int) -> int:
        codes = {r: read_exit_status(self.run_dir, r) for r in self.ranks}
        if rc == 0 or all(c == 0 for c in codes.values()):
            self.say(nodes.FINISHED, code=0)
            return 0
        if rc == EXIT_REQUEUE:
            self.say(nodes.STOPPED, reason="stopped on request", code=rc)
            return rc
        rank, exit_code, sig = self.culprit(codes)
        reason = rank_failure(rank, exit_code, sig) if rank is not None else \
            f"the launch script exited with status {rc} before any rank failed"
        self.say(nodes.FAILED, reason=reason, rank=rank, exit_code=exit_code, signal=sig,
                 code=rc)
        return rc

    def culprit(self, codes: dict) -> tuple[int | None, int | None, int | None]:
        """The node's failing rank: the first with a failing exit status, else the killed one
        its launcher names with a signal, else the first without an exit status."""
        failing = [r for r, c in codes.items() if c not in (None, 0, EXIT_REQUEUE)]
        if failing:
            return failing[0], codes[failing[0]], None
        # without an exit status: killed, if it started in this attempt (its pid file is new)
        killed = [r for r, c in codes.items() if c is None and self.started(r)]
        logs = [self.run_dir / node_out(self.node)]
        for r in killed:
            try:
                pid = int((self.run_dir / worker_pid(r)).read_text().strip())
            except (OSError, ValueError):
                continue
            sig = failure.killed_by(logs, pid)
            if sig:
                return r, None, sig
        return (killed[0], None, None) if killed else (None, None, None)


def host_run(run_dir: Path, node: int, attempt: int) -> int:
    return Node(Path(run_dir).resolve(), node, attempt).run()


def stop_node(run_dir: Path, node: int, grace_s: float = GRACE_S) -> int:
    """Stop what node `node`'s program recorded, on this host: TERM to the program (which stops
    its script and ranks), then KILL to it, its script's group and the node's rank processes."""
    run_dir = Path(run_dir).resolve()
    doc = nodes.read_node(run_dir, node) or {}
    procs: list[psutil.Process] = []
    pid = doc.get("pid")
    if isinstance(pid, int):
        try:
            p = psutil.Process(pid)
            if "host-run" in p.cmdline() and str(run_dir) in p.cmdline():
                procs.append(p)
        except psutil.Error:
            pass
    ranks = set(doc.get("rank_ids") or [])
    for p in psutil.process_iter(["cmdline"]):
        if p.pid == os.getpid() or str(run_dir) not in (p.info["cmdline"] or []):
            continue
        try:
            env = p.environ()
        except psutil.Error:
            continue
        if not rank_env.started_as_rank(env):  # packrun's own commands naming the run directory
            continue
        rank = rank_env.rank_from_env(env)
        if rank in ranks or (rank is None and node == 0):  # node 0: the scheduler too
            procs.append(p)
    for p in procs:
        _send(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 5  # the program itself waits grace_s for its ranks
    while time.monotonic() < deadline and any(_running(p) for p in procs):
        time.sleep(POLL_S)
    for p in procs:
        if _running(p):
            _send(p, signal.SIGKILL)
    pgid = doc.get("pgid")
    if isinstance(pgid, int) and pgid > 1:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    print(f"packrun: node {node}: stopped {len(procs)} process(es)", flush=True)
    return 0


def _running(p: psutil.Process) -> bool:
    """Alive, and not a zombie (a process whose parent has not reaped it yet is gone)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _send(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except psutil.Error:
        pass
