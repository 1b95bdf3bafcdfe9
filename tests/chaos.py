"""Chaos trials of a 2-worker `packrun run` (msrun): one process of the run, chosen at random (a
rank, the scheduler, msrun, the launcher itself), is killed with SIGKILL at a random moment, and
the run must still end with the uninterrupted run's final weights: by packrun's own restart
(max_restarts), or, when the launcher was the victim, by `packrun run --resume RUN_DIR` once
everything the dead launcher started is gone (launcher/supervise/lifeline.py).

Used by tests/launcher/supervise/test_no_orphans.py (a few trials, fixed seed) and by
benchmarks/chaos.py (N trials, a table).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.helpers import (
    REPO,
    digests,
    packrun,
    packrun_argv,
    packrun_env,
    pids_of,
    processes_of,
    run_dir_of,
)

VICTIMS = ("rank", "scheduler", "msrun", "launcher")
GONE_BOUND_S = 60.0   # a dead launcher's processes end within this (measured: ~2-3 s; loaded)
START_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 600.0


@dataclass
class Trial:
    number: int
    victim: str
    moment_s: float            # seconds after both ranks were seen
    outcome: str = ""          # "ok", or what went wrong
    killed: str = ""           # the victim as found (pid and what it was)
    run_dir: Path | None = None
    checks: dict = field(default_factory=dict)  # each check: True / False

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def plan(seed: int, trials: int, victims=VICTIMS, longest_s: float = 20.0) -> list[Trial]:
    """`trials` trials: victim and moment drawn from random.Random(seed)."""
    rng = random.Random(seed)
    return [Trial(i + 1, rng.choice(victims), round(rng.uniform(0.0, longest_s), 1))
            for i in range(trials)]


def uninterrupted(job: Path, name: str = "chaos_ref") -> dict[int, tuple[str, str]]:
    """The reference: the job's final weight digests when nothing is killed."""
    r = packrun("run", job, "--workers=2", f"--name={name}", timeout=RUN_TIMEOUT_S)
    if r.returncode != 0:
        raise AssertionError(f"the uninterrupted run failed: {r.stderr[-3000:]}")
    return digests(run_dir_of(r))


def _roles(run_dir: Path) -> dict[str, list[psutil.Process]]:
    """The run's processes by role: msrun, ranks (MS_WORKER), scheduler (MS_SCHED). Children of
    a rank (a fork before its exec shows the rank's command line) are left out."""
    found: dict[str, list[psutil.Process]] = {"msrun": [], "rank": [], "scheduler": []}
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if str(run_dir) not in cmd and f"--log_dir={run_dir}/logs" not in cmd:
            continue
        try:
            if "mindspore.parallel.cluster.run" in cmd:
                found["msrun"].append(p)
                continue
            parent = p.parent()
            if parent is None or "mindspore.parallel.cluster.run" not in parent.cmdline():
                continue
            role = p.environ().get("MS_ROLE")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if role == "MS_WORKER":
            found["rank"].append(p)
        elif role == "MS_SCHED":
            found["scheduler"].append(p)
    return found


def _new_run_dir(root: Path, name: str) -> Path | None:
    dirs = sorted(root.glob(f"{name}-*"))
    return dirs[-1] if dirs else None


def _epochs(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def _loadable(ckpt: Path) -> bool:
    import mindspore as ms
    try:
        return "end_point.weight" in ms.load_checkpoint(str(ckpt))
    except (ValueError, RuntimeError, OSError):
        return False


def run_trial(job: Path, trial: Trial, reference: dict, epochs: int,
              rng: random.Random | None = None) -> Trial:
    """Run one trial of `job` (2 workers, max_restarts 2) and record its outcome."""
    rng = rng or random.Random(trial.number)
    name = f"chaos{trial.number}"
    root = job.parent / "runs"
    proc = subprocess.Popen(packrun_argv("run", job, "--workers=2", f"--name={name}",
                                         "--max_restarts=2"),
                            cwd=REPO, env=packrun_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            run_dir = _new_run_dir(root, name)
            if run_dir is not None and len(_roles(run_dir)["rank"]) == 2:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                trial.outcome = f"the run did not start its ranks (exit {proc.poll()})"
                return trial
            time.sleep(0.2)
        trial.run_dir = run_dir
        time.sleep(trial.moment_s)
        if trial.victim == "launcher":
            victim: psutil.Process | None = psutil.Process(proc.pid)
        else:
            candidates = _roles(run_dir)[trial.victim]
            victim = rng.choice(candidates) if candidates else None
        if victim is None or proc.poll() is not None:
            trial.killed = "nothing: the run had ended"
        else:
            try:
                what = ("rank " + victim.environ().get("RANK_ID", "?")
                        if trial.victim == "rank" else trial.victim)
                victim.send_signal(signal.SIGKILL)
                trial.killed = f"{what} (pid {victim.pid})"
            except psutil.NoSuchProcess:
                trial.killed = "nothing: the victim had ended"
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
        if trial.victim == "launcher" and trial.killed.startswith("launcher"):
            t0 = time.monotonic()
            while processes_of(run_dir) and time.monotonic() - t0 < GONE_BOUND_S:
                time.sleep(0.2)
            trial.checks["launcher's processes gone"] = processes_of(run_dir) == []
            r = packrun("run", "--resume", run_dir, timeout=RUN_TIMEOUT_S)
            trial.checks["resume exit 0"] = r.returncode == 0
            out = r.stdout + r.stderr
        else:
            trial.checks["run exit 0"] = proc.returncode == 0
        _check_result(trial, run_dir, reference, epochs)
        if not all(trial.checks.values()):
            failed = [k for k, v in trial.checks.items() if not v]
            trial.outcome = "FAILED: " + ", ".join(failed) + "\n" + out[-2000:]
        else:
            trial.outcome = "ok"
        return trial
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if trial.run_dir is not None:
            for pid in pids_of(trial.run_dir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _check_result(trial: Trial, run_dir: Path, reference: dict, epochs: int) -> None:
    try:
        trial.checks["final weights = uninterrupted"] = digests(run_dir) == reference
    except (AssertionError, FileNotFoundError):
        trial.checks["final weights = uninterrupted"] = False
    trial.checks["each epoch once"] = _epochs(run_dir) == list(range(1, epochs + 1))
    trial.checks["best.ckpt loadable"] = _loadable(run_dir / "best.ckpt")
    trial.checks["nothing left running"] = processes_of(run_dir) == []
