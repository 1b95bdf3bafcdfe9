"""What a run directory says about its run: ONE reader, `read_run_state(run_dir)`, and ONE
vocabulary, `Phase`. `packrun status`, `ls`, `logs --follow`, `report`, `sweep-report` and the
demo's table all read a run through it; ls and logs hand it what they saw of the world (the
Slurm queue's phase for the run's job, mapped by launcher/slurm/client.py, and whether a live
process names the run directory), so it reads files only.

Sources: run_state.json (launcher/core/rundir/attempts.py: kind, attempt, phase, times, pid),
job.json (name, epochs, world size), metrics.jsonl (epochs done, best and last accuracy),
last.json (where last.ckpt resumes: epoch and step), failure.json (the newest failed attempt),
logs/ (each rank's exit file; the newest log's time), slurm_job_id and the batch output.

The phase: what the Slurm queue says while the job is queued or running; else what the
attempts recorded (a finished run's end; a local run whose packrun process is gone while it
says running is failed: packrun itself was killed); else what the files show (every rank's exit
status, a log written or not).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from launcher.core.rundir import failure
from launcher.core.rundir.metrics import best_row, read_metrics
from launcher.core.rundir.names import (
    EXIT_REQUEUE,
    FAILURE_JSON,
    JOB_JSON,
    JOB_SBATCH,
    LAST_POINT,
    LAUNCH_SCRIPTS,
    LOGS,
    METRICS,
    RUN_STATE,
    SLURM_JOB_ID,
    SLURM_OUTPUT_GLOB,
    WORKER_LOG_PREFIX,
    attempt_logs,
)
from launcher.core.rundir.schema import read_json


class Phase(StrEnum):
    """Where a run is. The values are the words run_state.json holds and the commands print."""
    RUNNING = "running"
    RESTARTING = "restarting"      # an attempt failed; the next one starts after a back-off
    PENDING = "pending"            # queued by Slurm, never started
    REQUEUED = "requeued"          # queued by Slurm again after it ran (requeue, preemption)
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"            # on request or by the user; resumable from last.ckpt
    NOT_STARTED = "not started"    # rendered, never launched
    CORRUPT = "corrupt"            # job.json is unreadable: not a run packrun can read

    @property
    def is_terminal(self) -> bool:
        """Nothing runs and nothing will by itself (a stopped run resumes only when asked)."""
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.STOPPED)

    @property
    def is_going(self) -> bool:
        """A process works on the run, or Slurm will start one."""
        return self in (Phase.RUNNING, Phase.RESTARTING, Phase.PENDING, Phase.REQUEUED)

    @property
    def listed(self) -> str:
        """The word `packrun ls` and the sweep summary print: a run never launched is
        "rendered" there (its launch files are written), "not started" in `packrun status`."""
        return "rendered" if self is Phase.NOT_STARTED else self.value


LAUNCH_FILES = tuple(LAUNCH_SCRIPTS.values())
SRUN_EXIT = re.compile(rb"packrun: srun exited with status (\d+)")
WORKER_EXIT = re.compile(re.escape(Path(WORKER_LOG_PREFIX).name) + r"(\d+)\.exit")


@dataclass
class RunState:
    """The state of one run directory (a sweep directory's too: `packrun ls`).

    path         the run directory, absolute
    name         how a listing names it: the directory's name (`ls`: its path below DIR)
    job_name     the job's name (job.json), "" if unreadable
    kind         how its files say it runs: "debug" | "run" | "Slurm"; "sweep (N points)"
    launch       how it was launched (run_state.json): "debug" | "run" | "node-launch" |
                 "slurm" ("slurm" once submitted), "" before its first attempt
    state        its Phase
    detail       why it failed / stopped, as its files say; a sweep: how many points are where
    attempt      the attempt number now or last running (1 = first launch; 0 = never started)
    max_restarts automatic restarts the run allows (its launcher's resolved value), or None
    epoch        epochs completed (the last row of metrics.jsonl; 0 = none); a sweep: points
                 completed
    step         steps of epoch `epoch` + 1 done in last.ckpt (a stop mid-epoch), else 0
    epochs       epochs the job trains (job.json); a sweep: its points
    best_acc     best validation accuracy so far, or None; best_epoch its epoch (0 = none)
    last_acc     the validation accuracy of the last evaluated epoch, or None
    world        worker processes (nodes x cards_per_node)
    start        Unix time of job.json's mtime (written when the run directory is made; touched
                 when a sweep starts the point); duration: seconds from it to the newest log
                 (to now while the run is going)
    started      Unix time of the first attempt's start, or None; duration_s: seconds from it to
                 the end (or to now while running), or None
    failure      the one-or-two-line summary of the newest failed attempt, "" if none
    failures     how many attempts failed (logs/attempt_<k>/failure.json files)
    job_id       the Slurm job id for a submitted run, else ""
    points       a sweep's points
    """
    path: Path
    name: str = ""
    job_name: str = ""
    kind: str = ""
    launch: str = ""
    state: Phase = Phase.NOT_STARTED
    detail: str = ""
    attempt: int = 0
    max_restarts: int | None = None
    epoch: int = 0
    step: int = 0
    epochs: int = 0
    best_acc: float | None = None
    best_epoch: int = 0
    last_acc: float | None = None
    world: int = 0
    start: float = 0.0
    duration: float = 0.0
    started: float | None = None
    duration_s: float | None = None
    failure: str = ""
    failures: int = 0
    job_id: str = ""
    points: list[RunState] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def job_id_of(run_dir: Path) -> str:
    """The Slurm job id in the run (or sweep) directory's slurm_job_id, "" if none."""
    return (_read_text(run_dir / SLURM_JOB_ID) or "").strip()


def _recorded(record: dict) -> Phase:
    try:
        return Phase(record.get("state", Phase.RUNNING))
    except ValueError:
        return Phase.RUNNING


def read_run_state(run_dir: str | Path, queued: Phase | None = None,
                   live: bool | None = None) -> RunState | None:
    """The RunState of `run_dir` (see RunState), None when it is not a run directory (no
    job.json). `queued`: the Slurm queue's phase for its job (None: not queued, or not asked);
    `live`: whether a live process names the run directory, None when the caller did not look
    (then the run's own records decide whether it is still going)."""
    run_dir = Path(run_dir).resolve()
    text = _read_text(run_dir / JOB_JSON)
    if text is None:
        return None
    try:
        job = json.loads(text)["spec"]
        world = int(job.get("nodes", 1) or 1) * int(job.get("cards_per_node", 1) or 1)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
        return RunState(run_dir, run_dir.name, kind="?", state=Phase.CORRUPT,
                        detail=f"corrupt {JOB_JSON}")
    read_json(run_dir / JOB_JSON)  # a newer packrun's run directory: one line, no misreading
    rs = RunState(run_dir, run_dir.name, job_name=job.get("name", ""),
                  epochs=int(job.get("epochs", 0) or 0), world=world, job_id=job_id_of(run_dir))
    if rs.job_id or (run_dir / JOB_SBATCH).exists():
        rs.kind = "Slurm"
    elif any((run_dir / f).exists() for f in LAUNCH_FILES):
        rs.kind = "run"
    else:
        rs.kind = "debug"
    if rs.job_id:
        rs.launch = "slurm"

    # the attempts' records
    record = read_json(run_dir / RUN_STATE) or {}
    recorded = None
    ended = None
    if record:
        rs.launch = record.get("kind", rs.launch)
        rs.attempt = int(record.get("attempt", 0))
        rs.max_restarts = record.get("max_restarts")
        rs.world = int(record.get("world", rs.world) or rs.world)
        recorded = _recorded(record)
        rs.started = record.get("started")
        ended = record.get("ended")
        if recorded in (Phase.RUNNING, Phase.RESTARTING) and rs.launch != "slurm" \
                and record.get("host") == socket.gethostname() and not _alive(record.get("pid")):
            recorded, ended = Phase.FAILED, record.get("updated")  # packrun itself was killed
        if rs.started:
            rs.duration_s = round((ended or time.time()) - rs.started, 1)

    # progress
    rows = read_metrics(run_dir)
    evaluated = [r for r in rows if r.get("val_acc") is not None]
    if rows:
        rs.epoch = int(rows[-1].get("epoch", 0))
        best = best_row(rows)
        if best:
            rs.best_acc, rs.best_epoch = best["val_acc"], int(best["epoch"])
    if evaluated:
        rs.last_acc = evaluated[-1]["val_acc"]
    point = read_json(run_dir / LAST_POINT) or {}
    if point and int(point.get("epoch", -1)) == rs.epoch:
        rs.step = int(point.get("step", 0))
    rs.failures = sum(1 for k in range(1, rs.attempt + 1)
                      if (run_dir / attempt_logs(k) / FAILURE_JSON).exists())
    newest_failure = failure.read_failure(run_dir)
    if newest_failure:
        rs.failure = failure.summary(newest_failure)

    # what the files show: exit files, logs, the batch output
    exits: dict[int, str] = {}
    newest = 0.0
    logs_seen = False
    try:
        entries = list(os.scandir(run_dir / LOGS))
    except (FileNotFoundError, NotADirectoryError):
        entries = []
    for e in entries:
        newest = max(newest, e.stat().st_mtime)
        if m := WORKER_EXIT.fullmatch(e.name):
            exits[int(m.group(1))] = (_read_text(Path(e.path)) or "").strip()
        elif e.name.endswith((".log", ".out")):
            logs_seen = True
    batch_out = sorted(run_dir.glob(SLURM_OUTPUT_GLOB)) if rs.kind == "Slurm" else []
    for p in batch_out:
        newest = max(newest, p.stat().st_mtime)
    if rows:
        newest = max(newest, (run_dir / METRICS).stat().st_mtime)
    rs.start = (run_dir / JOB_JSON).stat().st_mtime
    launched = logs_seen or bool(rows) or bool(exits) or bool(batch_out)

    failed = {r: c for r, c in exits.items() if c not in ("0", str(EXIT_REQUEUE))}
    requeue_exit = any(c == str(EXIT_REQUEUE) for c in exits.values())
    if queued is Phase.RUNNING or (queued is None and live):
        rs.state = Phase.RUNNING
    elif queued is Phase.REQUEUED or (queued is Phase.PENDING and launched):
        rs.state = Phase.REQUEUED
    elif queued in (Phase.PENDING, Phase.STOPPED):
        rs.state = queued
    elif recorded is not None and (recorded.is_terminal or live is None or (
            rs.launch != "slurm" and record.get("host") == socket.gethostname())):
        rs.state = recorded  # a going local run of this host: its packrun is alive (above)
    elif failed:
        rs.state = Phase.FAILED
    elif exits and all(c == "0" for c in exits.values()) and len(exits) >= rs.world:
        rs.state = Phase.COMPLETED
    elif requeue_exit:
        rs.state = Phase.STOPPED
    elif not launched:
        rs.state = Phase.NOT_STARTED if rs.kind != "Slurm" or not rs.job_id else Phase.FAILED
        if rs.state is Phase.FAILED:
            rs.detail = "the job ended without starting a worker"
    else:
        rs.state = Phase.FAILED
    if rs.state is Phase.FAILED and not rs.detail:
        if failed:
            first_rank, code = min(failed.items())
            rs.detail = f"rank {first_rank} exited with status {code}"
        else:
            srun = [m for p in batch_out for m in SRUN_EXIT.findall(p.read_bytes())]
            rs.detail = (f"srun exited with status {int(srun[-1])}" if srun and srun[-1] != b"0"
                         else "killed: no exit status")
    elif rs.state is Phase.STOPPED and requeue_exit:
        rs.detail = "stopped on request; resumable from last.ckpt"
    end = time.time() if rs.state.is_going else max(newest, rs.start)
    rs.duration = max(0.0, end - rs.start) if launched else 0.0
    return rs


def describe(rs: RunState) -> list[str]:
    """`packrun status` lines for a run."""
    head = f"{rs.job_name or rs.path.name}: {rs.state}"
    if rs.launch:
        head += f" ({rs.launch}, {rs.world} worker(s))"
    if rs.attempt:
        head += f", attempt {rs.attempt}"
        if rs.max_restarts:
            head += f" (max_restarts {rs.max_restarts})"
    if rs.duration_s is not None:
        head += f", {_duration(rs.duration_s)}"
    lines = [head]
    progress = f"epoch {rs.epoch}/{rs.epochs}"
    if rs.step:
        progress += f" and {rs.step} step(s) of epoch {rs.epoch + 1}"
    if rs.best_acc is not None:
        progress += f", best acc {rs.best_acc} (epoch {rs.best_epoch})"
    lines.append(progress if rs.epoch or rs.step else f"no epoch finished yet (of {rs.epochs})")
    if rs.failure:
        if rs.state is Phase.COMPLETED:
            lines.append(f"recovered from {rs.failures} failed attempt(s); the last:")
        lines += rs.failure.splitlines()
    return lines


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
