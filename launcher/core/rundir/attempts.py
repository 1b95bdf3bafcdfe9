"""Attempts of a run: each launch begun and ended in the run directory (the restart loop around
them is launcher/supervise/restarts.py; under Slurm the batch program, launcher/node/batch.py,
plays the loop by requeueing the job, through `batch_begin` / `batch_end` below).

An attempt is one launch in a run directory. `begin` numbers it (1, 2, ... over the run
directory's life, manual resumes included), moves the logs an earlier attempt left where logs
are into logs/attempt_<k>/ and records the state in RUN_DIR/run_state.json; `end` copies this
attempt's logs into logs/attempt_<k>/ (the newest stay where they are), writes failure.json
for a failure and decides: restart (while restarts < max_restarts), give up, or not retryable
(bad input, exit 2; a stop on request, 75; a user's Ctrl-C / SIGTERM / cancel). A restarted
launch resumes from last.ckpt like any other start.

Batch use: launcher/node/batch.py calls batch_begin / batch_end; job.sbatch files rendered
before it (and site templates) call the same as
  python -m launcher.node attempt begin RUN_DIR ATTEMPT
  python -m launcher.node attempt end RUN_DIR ATTEMPT RC   -> prints completed, restart or stop
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from launcher.core import hostlist
from launcher.core.errors import EXIT_USER_ERROR
from launcher.core.rundir import envrecord, failure
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.names import (
    EXIT_REQUEUE,
    LOGS,
    PREEMPT_FLAG,
    RUN_STATE,
    attempt_logs,
    read_exit_status,
    worker_pid,
)
from launcher.core.rundir.schema import read_json, stamped
from launcher.core.rundir.state import Phase

# The standard logger: launcher/core/log.py's console handler, on the `launcher` logger, formats
# it (core.log imports the names of this package, so this package does not import core.log).
log = logging.getLogger(__name__)

DEFAULT_MAX_RESTARTS = {"run": 0, "debug": 0, "node-launch": 0, "slurm": 3}
BACKOFF_S = (2.0, 30.0)  # first wait, longest wait (doubling)


@dataclass
class Result:
    """How one launch ended: its exit status and, for a failure, who failed how."""
    code: int
    rank: int | None = None
    signal: int | None = None    # the signal that killed the failing rank
    exit_code: int | None = None  # the failing rank's exit status (None: killed)
    reason: str = ""
    user_stop: bool = False       # packrun was asked to stop (Ctrl-C, SIGTERM, cancel)
    host: str = ""
    node: int | None = None       # the failing node of a launch over ssh (launcher/multinode)
    stall: dict | None = None     # the stall watchdog ended it: failure.json's `stall` entry


def max_restarts(spec, kind: str) -> int:
    return spec.max_restarts if spec.max_restarts >= 0 else DEFAULT_MAX_RESTARTS[kind]


def read_state(run_dir: Path) -> dict:
    """run_state.json as the attempts wrote it ({} before the first); a newer packrun's is an
    error (launcher/core/rundir/schema.py). Its state, as every reader sees it: state.py."""
    return read_json(Path(run_dir) / RUN_STATE) or {}


def write_state(run_dir: Path, **changes) -> dict:
    state = stamped(read_state(run_dir) | changes | {"updated": time.time()})
    write_atomic(Path(run_dir) / RUN_STATE, json.dumps(state, indent=1) + "\n")
    return state


def _log_files(run_dir: Path) -> list[Path]:
    logs = Path(run_dir) / LOGS
    return [p for p in logs.iterdir() if p.is_file()] if logs.is_dir() else []


def archive_logs(run_dir: Path, attempt: int, move: bool,
                 only: Callable[[Path], bool] | None = None) -> None:
    """logs/* (files; those `only` accepts) into logs/attempt_<attempt>/: copied at an attempt's
    end, moved (so the next attempt starts with clean logs) at the next one's beginning."""
    files = [f for f in _log_files(run_dir) if only is None or only(f)]
    if not files:
        return
    dest = Path(run_dir) / attempt_logs(attempt)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        if move:
            os.replace(f, dest / f.name)
        else:
            shutil.copy2(f, dest / f.name)


def begin(run_dir: Path, kind: str, world: int, allowed: int, attempt: int | None = None,
          only: Callable[[Path], bool] | None = None, record: bool = True) -> int:
    """Start an attempt: its number (`attempt`, else one more than the last). `record` False
    (node-launch on nodes other than 0) only archives: node 0 keeps the run's state."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    previous = (attempt - 1 if attempt else 0) or int(state.get("attempt", 0))
    if previous:
        archive_logs(run_dir, previous, move=True, only=only)
    attempt = attempt or previous + 1
    if not record:
        return attempt
    for change in envrecord.record(run_dir):  # env.json: what this attempt runs with
        log.warning(f"packrun: attempt {attempt} runs with a changed environment: {change}")
    now = time.time()
    write_state(run_dir, kind=kind, world=world, attempt=attempt, max_restarts=allowed,
                state=Phase.RUNNING, started=state.get("started", now), attempt_started=now,
                ended=None, host=socket.gethostname(), pid=os.getpid())
    return attempt


def retryable(result: Result) -> bool:
    return not result.user_stop and result.code not in (0, EXIT_REQUEUE, EXIT_USER_ERROR) \
        and result.exit_code != EXIT_USER_ERROR


def end(run_dir: Path, attempt: int, result: Result, *, restart_allowed: bool,
        max_attempts: int, only: Callable[[Path], bool] | None = None,
        record_state: bool = True) -> dict | None:
    """Close an attempt; the failure record (its `action` says what happens next), or None when
    the attempt did not fail. `record_state` False: archive and decide, write nothing else."""
    run_dir = Path(run_dir)
    record = None
    if result.code == 0:
        state = Phase.COMPLETED
    elif result.code == EXIT_REQUEUE or result.user_stop:
        state = Phase.STOPPED
    else:
        action = failure.NOT_RETRYABLE if not retryable(result) else \
            failure.RESTARTED if restart_allowed else failure.GAVE_UP
        record = failure.failure_record(
            run_dir, attempt=attempt, max_attempts=max_attempts, rank=result.rank,
            host=result.host or socket.gethostname(), exit_code=result.exit_code,
            signal=result.signal, reason=result.reason, action=action, node=result.node,
            stall=result.stall)
        state = Phase.RESTARTING if action == failure.RESTARTED else Phase.FAILED
    archive_logs(run_dir, attempt, move=False, only=only)
    if not record_state:
        return record
    if record is not None:
        failure.write_failure(run_dir, record)
    write_state(run_dir, state=state, ended=None if state is Phase.RESTARTING else time.time(),
                exit_code=result.code)
    return record



# --------------------------------------------------------------------------------------------
# The batch script's side (Slurm: every attempt is a run of job.sbatch)
# --------------------------------------------------------------------------------------------

def result_from_files(run_dir: Path, rc: int, world: int) -> Result:
    """What the ranks' exit and pid files and the launchers' logs say about a failed launch
    whose workers packrun did not watch (an srun step, a node-launch): the failing rank is the
    first with a failing status, else the killed one msrun names, else the first killed."""
    if every_rank_finished(run_dir, world):
        log.warning(finished_anyway(f"the launch exited with status {rc}"))
        return Result(0)
    codes = {rank: read_exit_status(run_dir, rank) for rank in range(world)}
    failing = [r for r, c in codes.items() if c not in (None, 0, EXIT_REQUEUE)]
    if failing:
        return rank_result(run_dir, rc, failing[0], exit_code=codes[failing[0]])
    killed = [r for r, c in codes.items() if c is None and _pid(run_dir, r) is not None]
    if killed and rc != 0:
        # the launchers kill the others once one died: the one their logs name is the culprit
        logs = sorted((run_dir / LOGS).glob("*.out")) + sorted((run_dir / LOGS).glob("*.log"))
        signals_of = {r: failure.killed_by(logs, pid) for r in killed
                      if (pid := _pid(run_dir, r)) is not None}
        named = [r for r in killed if signals_of.get(r)]
        r = named[0] if named else killed[0]
        return rank_result(run_dir, rc, r, sig=signals_of.get(r))
    return Result(rc, exit_code=rc, reason=f"the launch exited with status {rc} before any "
                                           "worker failed")


def rank_result(run_dir: Path, rc: int, rank: int, exit_code: int | None = None,
                sig: int | None = None) -> Result:
    """A launch with status `rc` failed because rank `rank` did: it exited with `exit_code`, or
    (None) was killed, by signal `sig` when known."""
    if exit_code is not None:
        return Result(rc or 1, rank, exit_code=exit_code,
                      reason=f"rank {rank} exited with status {exit_code}",
                      host=_host(run_dir, rank))
    how = f"was killed by signal {sig}" if sig else "was killed (no exit status)"
    return Result(rc, rank, sig, reason=f"rank {rank} {how}", host=_host(run_dir, rank))


def _host(run_dir: Path, rank: int) -> str:
    """The node of a rank under Slurm: ranks are laid out node by node."""
    try:
        hosts = hostlist.expand(os.environ.get("SLURM_JOB_NODELIST", ""))
        return hosts[rank // spec_from_json(run_dir).cards_per_node]
    except Exception:  # noqa: BLE001 (a best guess for the report, never a failure)
        return ""


def batch_allowed(spec) -> int:
    """Restarts a Slurm job may make: requeues, so none without requeue."""
    return max_restarts(spec, "slurm") if spec.requeue else 0


def batch_begin(run_dir: Path, attempt: int) -> None:
    """A run of the batch script begins attempt `attempt` (SLURM_RESTART_COUNT + 1)."""
    spec = spec_from_json(run_dir)
    begin(run_dir, "slurm", spec.nodes * spec.cards_per_node, batch_allowed(spec), attempt)


def batch_end(run_dir: Path, attempt: int, rc: int, known: Result | None = None) -> str:
    """The srun step of attempt `attempt` ended with status `rc`: record it (logs kept,
    failure.json written) and decide: "completed" (every rank finished with exit status 0,
    whatever srun's own status), "restart" (a failure that may be retried: requeue) or "stop".
    `known`: the batch program ended the step because of this failure (a stall, a rank that
    failed first: the ranks it stopped then may leave statuses of their own)."""
    spec = spec_from_json(run_dir)
    world = spec.nodes * spec.cards_per_node
    allowed = batch_allowed(spec)
    if known is not None:
        result = known
    elif rc == 0:
        result = Result(0)
    elif (run_dir / PREEMPT_FLAG).exists() and any(
            read_exit_status(run_dir, r) == EXIT_REQUEUE for r in range(world)):
        result = Result(EXIT_REQUEUE)  # stopped on request: the batch program requeues it
    else:
        result = result_from_files(run_dir, rc, world)
    record = end(run_dir, attempt, result, restart_allowed=attempt - 1 < allowed,
                 max_attempts=allowed + 1)
    if record is not None:
        log.error(f"packrun: {failure.summary(record)}")
    if result.code == 0:
        return "completed"
    return "restart" if record and record["action"] == failure.RESTARTED else "stop"


def batch_main(argv: list[str]) -> int:
    """`attempt begin|end ...` (the node verb job.sbatch of job.json schema 1 calls; packrun's
    own batch program, launcher/node/batch.py, calls batch_begin / batch_end)."""
    command, run_dir, attempt = argv[0], Path(argv[1]), int(argv[2])
    if command == "begin":
        batch_begin(run_dir, attempt)
    else:
        print(batch_end(run_dir, attempt, int(argv[3])))
    return 0


def _pid(run_dir: Path, rank: int) -> int | None:
    try:
        return int((run_dir / worker_pid(rank)).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def every_rank_finished(run_dir: Path, world: int) -> bool:
    """Every rank left exit status 0: the job's work is done and saved, whatever the launcher's
    own status says. MindSpore's processes now and then crash while they shut down, after the
    worker wrote its exit file (seen: Open MPI reporting a rank's SIGSEGV at exit, 1 run in
    about 40); that is not a failed job, and retrying it would train again for nothing."""
    return world > 0 and all(read_exit_status(run_dir, r) == 0 for r in range(world))


def finished_anyway(what: str) -> str:
    return (f"packrun: warning: {what} after every rank had finished with exit status 0 (a "
            "crash while the processes shut down); the run's files are complete")
