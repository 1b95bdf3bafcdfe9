"""`packrun ls [DIR]`: the run and sweep directories under DIR, newest first.

Everything comes from the directories' own files, plus two batched looks at the world: one scan
of the process table (which run directories have a live process: a local run that is going) and,
when any run was submitted to Slurm, ONE `squeue` call for all of them (never one per run).

`_read_state` is the one function that turns a run directory's files into its state; the
scheduler's and the process table's answers are handed to it, so it reads files only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.names import (
    EXIT_REQUEUE,
    JOB_JSON,
    JOB_SBATCH,
    LAUNCH_SCRIPTS,
    LOGS,
    METRICS,
    SLURM_JOB_ID,
)

SWEEP_JSON = "sweep.json"  # (launcher/sweep/plan.py; not imported: ls stays light)
LAUNCH_FILES = tuple(LAUNCH_SCRIPTS.values())
SRUN_EXIT = re.compile(rb"packrun: srun exited with status (\d+)")
# squeue states, by what ls calls them
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
SLURM_PENDING = {"PENDING"}
SLURM_REQUEUED = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"}
SLURM_STOPPED = {"SUSPENDED", "STOPPED"}


@dataclass
class RunState:
    path: Path
    name: str
    kind: str                      # debug, run, Slurm, sweep (n points)
    state: str                     # running, completed, failed, stopped, requeued, pending,
                                   # rendered (never started)
    epoch: int = 0                 # last epoch finished
    epochs: int = 0
    best_acc: float | None = None
    best_epoch: int = 0
    last_acc: float | None = None  # val acc of the last evaluated epoch
    world: int = 0
    start: float = 0.0             # epoch seconds: job.json's mtime (written when the run
                                   # directory is made; touched when a sweep starts the point)
    duration: float = 0.0          # seconds, up to now for a run that is going
    job_id: str = ""
    detail: str = ""               # why it failed, which points are where, ...
    points: list[RunState] = field(default_factory=list)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _metrics(run_dir: Path) -> list[dict]:
    rows = []
    for line in (_read_text(run_dir / METRICS) or "").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a row being written
            continue
    return rows


def _read_state(run_dir: Path, sched: str | None = None, live: bool = False) -> RunState | None:
    """A run directory's state from its current files (job.json, metrics.jsonl,
    logs/worker_<rank>.exit, slurm_job_id, the batch output), given what the scheduler says of
    its job (`sched`: squeue's state, None when the job is not in the queue) and whether a live
    process names it (`live`). None when `run_dir` is not a run directory."""
    text = _read_text(run_dir / JOB_JSON)
    if text is None:
        return None
    try:
        spec = json.loads(text)["spec"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return RunState(run_dir, run_dir.name, "?", "corrupt", detail=f"corrupt {JOB_JSON}")
    world = int(spec.get("nodes", 1)) * int(spec.get("cards_per_node", 1))
    job_id = (_read_text(run_dir / SLURM_JOB_ID) or "").strip()
    if job_id or (run_dir / JOB_SBATCH).exists():
        kind = "Slurm"
    elif any((run_dir / f).exists() for f in LAUNCH_FILES):
        kind = "run"
    else:
        kind = "debug"
    rows = _metrics(run_dir)
    evaluated = [r for r in rows if r.get("val_acc") is not None]
    best = max(evaluated, key=lambda r: (r["val_acc"], r["epoch"]), default=None)

    exits: dict[int, str] = {}
    newest = 0.0
    logs_seen = False
    batch_out = []
    try:
        entries = list(os.scandir(run_dir / LOGS))
    except FileNotFoundError:
        entries = []
    for e in entries:
        st = e.stat()
        newest = max(newest, st.st_mtime)
        if e.name.startswith("worker_") and e.name.endswith(".exit"):
            rank = e.name[len("worker_"):-len(".exit")]
            if rank.isdigit():
                exits[int(rank)] = (_read_text(Path(e.path)) or "").strip()
        elif e.name.endswith((".log", ".out")):
            logs_seen = True
    if kind == "Slurm":
        batch_out = sorted(run_dir.glob("slurm-*.out"))
        for p in batch_out:
            newest = max(newest, p.stat().st_mtime)
    metrics_path = run_dir / METRICS
    if rows:
        newest = max(newest, metrics_path.stat().st_mtime)
    start = (run_dir / JOB_JSON).stat().st_mtime
    started = logs_seen or bool(rows) or bool(exits) or bool(batch_out)

    detail = ""
    failed = {r: c for r, c in exits.items() if c not in ("0", str(EXIT_REQUEUE))}
    if sched in SLURM_RUNNING or (sched is None and live):
        state = "running"
    elif sched in SLURM_REQUEUED or (sched in SLURM_PENDING and started):
        state = "requeued"
    elif sched in SLURM_PENDING:
        state = "pending"
    elif sched in SLURM_STOPPED:
        state = "stopped"
    elif failed:
        first_rank, code = min(failed.items())
        state, detail = "failed", f"rank {first_rank} exited with status {code}"
    elif exits and all(c == "0" for c in exits.values()) and len(exits) >= world:
        state = "completed"
    elif any(c == str(EXIT_REQUEUE) for c in exits.values()):
        state, detail = "stopped", "stopped on request; resumable from last.ckpt"
    elif not started:
        state = "rendered" if kind != "Slurm" or not job_id else "failed"
        detail = "" if state == "rendered" else "the job ended without starting a worker"
    else:
        state = "failed"
        srun = [m for p in batch_out for m in SRUN_EXIT.findall(p.read_bytes())]
        detail = (f"srun exited with status {int(srun[-1])}" if srun and srun[-1] != b"0"
                  else "killed: no exit status")
    end = time.time() if state in ("running", "requeued", "pending") else max(newest, start)
    return RunState(
        path=run_dir, name=run_dir.name, kind=kind, state=state,
        epoch=rows[-1].get("epoch", 0) if rows else 0, epochs=int(spec.get("epochs", 0)),
        best_acc=best["val_acc"] if best else None, best_epoch=best["epoch"] if best else 0,
        last_acc=evaluated[-1]["val_acc"] if evaluated else None, world=world, start=start,
        duration=max(0.0, end - start) if started else 0.0, job_id=job_id, detail=detail)


# ---------------------------------------------------------------------------------------------
# The batched looks: the process table and the Slurm queue
# ---------------------------------------------------------------------------------------------

def live_run_dirs() -> set[str]:
    """Every path named on the command line of a live process (one process-table scan)."""
    import psutil

    found: set[str] = set()
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:  # ended, not yet reaped
            continue
        for arg in p.info["cmdline"] or ():
            if arg.startswith("/"):
                found.add(arg.rstrip("/"))
    return found


def squeue_states(job_ids: set[str]) -> dict[str, str]:
    """{job id: state} for the queued jobs (array tasks also as ARRAYID_TASK), from ONE squeue
    call; empty when `job_ids` is (no Slurm run to ask about) or Slurm is not here."""
    if not job_ids:
        return {}
    try:
        res = subprocess.run(["squeue", "-h", "-r", "-o", "%A|%F|%K|%T"], capture_output=True,
                             text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return {}
    if res.returncode != 0:
        return {}
    states: dict[str, str] = {}
    for line in res.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        own, array, task, state = parts
        states[own] = state
        if task and task not in ("N/A", "4294967294"):
            # an array task: by ARRAYID_TASK too (the array's id is also one task's own id,
            # so it says nothing of the others); ARRAYID_ marks an array still queued
            states[f"{array}_{task}"] = state
            states[f"{array}_"] = state
    return states


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------

def _sweep_state(sweep_dir: Path, queue: dict[str, str], live: set[str]) -> RunState | None:
    try:
        doc = json.loads((sweep_dir / SWEEP_JSON).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    array = (_read_text(sweep_dir / SLURM_JOB_ID) or "").strip()
    points = []
    for p in doc.get("points", []):
        d = sweep_dir / p["dir"]
        own = (_read_text(d / SLURM_JOB_ID) or "").strip()
        sched = queue.get(f"{array}_{p['index']}") if array else None
        sched = sched or (queue.get(own) if own else None)
        st = _read_state(d, sched, str(d) in live)
        if st is None:
            continue
        if array and sched is None and st.state == "rendered":
            # a task not started yet, or one that ended before writing anything
            st.state = "pending" if f"{array}_" in queue else "failed"
        points.append(st)
    n = len(doc.get("points", []))
    counts: dict[str, int] = {}
    for st in points:
        counts[st.state] = counts.get(st.state, 0) + 1
    if any(s in counts for s in ("running", "requeued")):
        state = "running"
    elif "pending" in counts:
        state = "pending"
    elif "failed" in counts:
        state = "failed"
    elif "stopped" in counts:
        state = "stopped"
    elif counts.get("completed") == n:
        state = "completed"
    else:
        state = "rendered"
    evaluated = [st for st in points if st.best_acc is not None]
    best = max(evaluated, key=lambda st: st.best_acc or 0.0, default=None)
    start = (sweep_dir / SWEEP_JSON).stat().st_mtime
    ends = [st.start + st.duration for st in points if st.duration]
    return RunState(
        path=sweep_dir, name=sweep_dir.name, kind=f"sweep ({n} points)", state=state,
        epoch=counts.get("completed", 0), epochs=n,
        best_acc=best.best_acc if best else None, best_epoch=best.best_epoch if best else 0,
        world=max((st.world for st in points), default=0), start=start,
        duration=max(ends, default=start) - start, job_id=array,
        detail=", ".join(f"{v} {k}" for k, v in sorted(counts.items())), points=points)


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------

MAX_DEPTH = 3  # how deep ls looks through plain folders (runs/demo/<run>) for run directories


def _candidates(base: Path) -> list[Path]:
    """Run and sweep directories under `base` (not inside them), through plain folders."""
    found: list[Path] = []
    level = [base]
    for _ in range(MAX_DEPTH):
        below: list[Path] = []
        for d in level:
            try:
                entries = sorted(Path(e.path) for e in os.scandir(d) if e.is_dir())
            except (PermissionError, FileNotFoundError):
                continue
            for sub in entries:
                is_run = (sub / JOB_JSON).is_file() or (sub / SWEEP_JSON).is_file()
                (found if is_run else below).append(sub)
        level = below
    return found


def scan(root: str | os.PathLike) -> list[RunState]:
    """Run and sweep directories under `root` (and `root` itself when it is one), newest
    first; a run in a plain sub-folder (runs/demo/<run>) is named by its path below `root`."""
    base = Path(str(root)).expanduser()
    if not base.is_dir():
        what = "is a file" if base.exists() else "does not exist"
        raise UserError(f"{base} {what}; give a directory holding run directories (default: "
                        "runs)")
    base = base.resolve()
    candidates = [base] if (base / JOB_JSON).is_file() or (base / SWEEP_JSON).is_file() else \
        _candidates(base)
    sweeps = [d for d in candidates if (d / SWEEP_JSON).is_file()]
    runs = [d for d in candidates if d not in sweeps and (d / JOB_JSON).is_file()]
    ids = {(_read_text(d / SLURM_JOB_ID) or "").strip() for d in runs + sweeps}
    for s in sweeps:  # array tasks write their point's slurm_job_id
        ids |= {(_read_text(p) or "").strip() for p in s.glob(f"*/{SLURM_JOB_ID}")}
    ids.discard("")
    queue = squeue_states(ids)
    live = live_run_dirs()
    found = [st for d in runs if (st := _read_state(d, queue.get(
        (_read_text(d / SLURM_JOB_ID) or "").strip()), str(d) in live))]
    found += [st for d in sweeps if (st := _sweep_state(d, queue, live))]
    for st in found:
        if st.path != base:
            st.name = str(st.path.relative_to(base))
    return sorted(found, key=lambda st: st.start, reverse=True)


def fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_acc(acc: float | None) -> str:
    return "-" if acc is None else f"{acc:.4f}"


def table(states: list[RunState]) -> str:
    header = ("name", "kind", "state", "epoch", "best acc", "world", "start", "duration")
    rows = []
    for st in states:
        epoch = f"{st.epoch}/{st.epochs}" + (" pts" if st.kind.startswith("sweep") else "")
        state = st.state + (f" ({st.detail})" if st.detail and st.state != "completed" else "")
        rows.append((st.name, st.kind, state, epoch, fmt_acc(st.best_acc), str(st.world),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(st.start)),
                     fmt_duration(st.duration)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def ls_command(root: str | os.PathLike = "runs") -> str:
    """The table of `scan(root)`; for a sweep directory, its row and then its points'."""
    states = scan(root)
    if not states:
        return f"no run or sweep directories under {Path(str(root)).resolve()}"
    if len(states) == 1 and states[0].points:
        return table(states) + "\n\npoints:\n" + table(states[0].points)
    return table(states)
