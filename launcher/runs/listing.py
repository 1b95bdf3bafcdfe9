"""`packrun ls [DIR]`: the run and sweep directories under DIR, newest first.

Everything comes from the directories' own files, plus two batched looks at the world: one scan
of the process table (which run directories have a live process: a local run that is going) and,
when any run was submitted to Slurm, ONE `squeue` call for all of them (never one per run).

The state of each run comes from the one reader, launcher/core/rundir/state.py; the queue's and
the process table's answers are handed to it (the queue's through launcher/slurm/client.py's map
of Slurm's states), so it reads files only.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil

from launcher.core.errors import UserError
from launcher.core.rundir.names import JOB_JSON, SLURM_JOB_ID, SWEEP_JSON
from launcher.core.rundir.schema import NewerSchema
from launcher.core.rundir.state import Phase, RunState, job_id_of, read_run_state
from launcher.core.rundir.sweepdir import sweep_doc
from launcher.slurm.client import queued_phase


def read_listed(run_dir: Path, queue: dict[str, str], live: set[str],
                job_id: str | None = None) -> RunState | None:
    """A run directory's state (launcher/core/rundir/state.py) given the two looks at the world:
    the queue's state of its job (`job_id`, default its own slurm_job_id) and the live paths."""
    job_id = job_id_of(run_dir) if job_id is None else job_id
    try:
        return read_run_state(run_dir, queued_phase(queue.get(job_id) if job_id else None),
                              str(run_dir) in live)
    except NewerSchema as e:  # listed, not read: one such directory must not end the listing
        return RunState(run_dir, run_dir.name, kind="?", state=Phase.CORRUPT,
                        start=(run_dir / JOB_JSON).stat().st_mtime,
                        detail=f"written by a newer packrun (schema {e.schema})")


# ---------------------------------------------------------------------------------------------
# The batched looks: the process table and the Slurm queue
# ---------------------------------------------------------------------------------------------

def live_run_dirs() -> set[str]:
    """Every path named on the command line of a live process (one process-table scan)."""
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

def sweep_state(sweep_dir: Path, queue: dict[str, str], live: set[str]) -> RunState | None:
    """A sweep directory's row (its points' states in `points`), None when sweep.json is
    missing or corrupt."""
    doc = sweep_doc(sweep_dir)
    if doc is None:
        return None
    array = job_id_of(sweep_dir)
    points = []
    for p in doc.get("points", []):
        d = sweep_dir / p["dir"]
        own = job_id_of(d)
        task = f"{array}_{p['index']}"
        job_id = task if array and task in queue else own
        st = read_listed(d, queue, live, job_id)
        if st is None:
            continue
        if array and queue.get(job_id) is None and st.state is Phase.NOT_STARTED:
            # a task not started yet, or one that ended before writing anything
            st.state = Phase.PENDING if f"{array}_" in queue else Phase.FAILED
        points.append(st)
    n = len(doc.get("points", []))
    counts: dict[Phase, int] = {}
    for st in points:
        counts[st.state] = counts.get(st.state, 0) + 1
    if any(s in counts for s in (Phase.RUNNING, Phase.RESTARTING, Phase.REQUEUED)):
        state = Phase.RUNNING
    elif Phase.PENDING in counts:
        state = Phase.PENDING
    elif Phase.FAILED in counts:
        state = Phase.FAILED
    elif Phase.STOPPED in counts:
        state = Phase.STOPPED
    elif counts.get(Phase.COMPLETED) == n:
        state = Phase.COMPLETED
    else:
        state = Phase.NOT_STARTED
    evaluated = [st for st in points if st.best_acc is not None]
    best = max(evaluated, key=lambda st: st.best_acc or 0.0, default=None)
    start = (sweep_dir / SWEEP_JSON).stat().st_mtime
    ends = [st.start + st.duration for st in points if st.duration]
    return RunState(
        path=sweep_dir, name=sweep_dir.name, kind=f"sweep ({n} points)", state=state,
        epoch=counts.get(Phase.COMPLETED, 0), epochs=n,
        best_acc=best.best_acc if best else None, best_epoch=best.best_epoch if best else 0,
        world=max((st.world for st in points), default=0), start=start,
        duration=max(ends, default=start) - start, job_id=array,
        detail=", ".join(f"{v} {k.listed}" for k, v in sorted(counts.items(),
                                                               key=lambda kv: kv[0].listed)),
        points=points)


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
    ids = {job_id_of(d) for d in runs + sweeps}
    for s in sweeps:  # array tasks write their point's slurm_job_id
        ids |= {job_id_of(p.parent) for p in s.glob(f"*/{SLURM_JOB_ID}")}
    ids.discard("")
    queue = squeue_states(ids)
    live = live_run_dirs()
    found = [st for d in runs if (st := read_listed(d, queue, live))]
    found += [st for d in sweeps if (st := sweep_state(d, queue, live))]
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
        state = st.state.listed + (f" ({st.detail})" if st.detail
                                   and st.state is not Phase.COMPLETED else "")
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
