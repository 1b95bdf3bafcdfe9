"""What a run directory says about its run, from its files alone (no memory, no MindSpore, no
Slurm call): `run_state(run_dir)`. `packrun status` prints it (adding Slurm's view for a
submitted run); `packrun ls` lists it per run.

Sources: run_state.json (launcher/core/rundir/attempts.py: kind, attempt, state, times), metrics.jsonl
(epochs done, best accuracy), last.json (where last.ckpt resumes: epoch and step),
failure.json (the newest failed attempt), slurm_job_id, job.json (epochs, world size).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from launcher.core.rundir import failure
from launcher.core.rundir.metrics import best_row, read_metrics
from launcher.core.rundir.names import (
    FAILURE_JSON,
    JOB_JSON,
    LAST_POINT,
    RUN_STATE,
    SLURM_JOB_ID,
    attempt_logs,
)

STATES = ("running", "completed", "failed", "stopped", "restarting", "not started")


@dataclass
class RunState:
    """The state of one run directory.

    run_dir      absolute path of the run directory
    name         the job's name (job.json), "" if unreadable
    kind         "debug" | "run" | "slurm" (how it was launched; "slurm" once submitted)
    state        "running" | "completed" | "failed" | "stopped" | "restarting" | "not started".
                 A local run whose packrun process is gone while its state says running is
                 "failed" (packrun itself was killed); `stopped` = stopped on request or by the
                 user, resumable from last.ckpt.
    attempt      the attempt number now or last running (1 = first launch; 0 = never started)
    max_restarts automatic restarts the run allows (its launcher's resolved value), or None
    epoch        epochs completed (the last row of metrics.jsonl; 0 = none)
    step         steps of epoch `epoch` + 1 done in last.ckpt (a stop mid-epoch), else 0
    epochs       epochs the job trains (job.json)
    best_acc     best validation accuracy so far, or None; best_epoch its epoch (0 = none)
    world        worker processes (nodes x cards_per_node)
    started      Unix time of the first attempt's start, or None
    duration_s   seconds from `started` to the end (or to now while running), or None
    failure      the one-or-two-line summary of the newest failed attempt, "" if none
    failures     how many attempts failed (logs/attempt_<k>/failure.json files)
    slurm_job_id the Slurm job id for a submitted run, else ""
    """
    run_dir: str
    name: str = ""
    kind: str = ""
    state: str = "not started"
    attempt: int = 0
    max_restarts: int | None = None
    epoch: int = 0
    step: int = 0
    epochs: int = 0
    best_acc: float | None = None
    best_epoch: int = 0
    world: int = 0
    started: float | None = None
    duration_s: float | None = None
    failure: str = ""
    failures: int = 0
    slurm_job_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def run_state(run_dir: str | Path) -> RunState:
    """The RunState of `run_dir` (see RunState for the fields)."""
    run_dir = Path(run_dir).resolve()
    job = _json(run_dir / JOB_JSON).get("spec", {})
    rs = RunState(run_dir=str(run_dir), name=job.get("name", ""),
                  epochs=int(job.get("epochs", 0) or 0),
                  world=int(job.get("nodes", 1) or 1) * int(job.get("cards_per_node", 1) or 1))
    job_id_file = run_dir / SLURM_JOB_ID
    if job_id_file.exists():
        rs.slurm_job_id = job_id_file.read_text().strip()
        rs.kind = "slurm"
    state = _json(run_dir / RUN_STATE)
    if state:
        rs.kind = state.get("kind", rs.kind)
        rs.attempt = int(state.get("attempt", 0))
        rs.max_restarts = state.get("max_restarts")
        rs.world = int(state.get("world", rs.world) or rs.world)
        rs.state = state.get("state", "running")
        rs.started = state.get("started")
        ended = state.get("ended")
        if rs.state in ("running", "restarting") and rs.kind != "slurm" \
                and state.get("host") == socket.gethostname() and not _alive(state.get("pid")):
            rs.state, ended = "failed", state.get("updated")  # packrun itself was killed
        if rs.started:
            rs.duration_s = round((ended or time.time()) - rs.started, 1)
    rows = read_metrics(run_dir)
    if rows:
        rs.epoch = int(rows[-1]["epoch"])
        best = best_row(rows)
        if best:
            rs.best_acc, rs.best_epoch = best["val_acc"], int(best["epoch"])
    point = _json(run_dir / LAST_POINT)
    if point and int(point.get("epoch", -1)) == rs.epoch:
        rs.step = int(point.get("step", 0))
    rs.failures = sum(1 for k in range(1, rs.attempt + 1)
                      if (run_dir / attempt_logs(k) / FAILURE_JSON).exists())
    record = failure.read_failure(run_dir)
    if record:
        rs.failure = failure.summary(record)
    return rs


def describe(rs: RunState) -> list[str]:
    """`packrun status` lines for a run."""
    head = f"{rs.name or Path(rs.run_dir).name}: {rs.state}"
    if rs.kind:
        head += f" ({rs.kind}, {rs.world} worker(s))"
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
        if rs.state == "completed":
            lines.append(f"recovered from {rs.failures} failed attempt(s); the last:")
        lines += rs.failure.splitlines()
    return lines


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


