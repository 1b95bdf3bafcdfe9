"""Killing parts of a run for real.

Chaos trials of a 2-worker `packrun run` (msrun): one process of the run, chosen at random (a
rank, the scheduler, msrun, the launcher itself), is killed with SIGKILL at a random moment, and
the run must still end with the uninterrupted run's final weights: by packrun's own restart
(max_restarts), or, when the launcher was the victim, by `packrun run --resume RUN_DIR` once
everything the dead launcher started is gone (launcher/supervise/lifeline.py).

And each kind of launcher (`packrun run`, `debug`, `node-launch`, the Slurm batch program with
a stand-in srun) started and killed with SIGKILL while its ranks start (`start_launcher`,
`kill_launcher`): how long until nothing it started runs and its run directory is free.

Used by tests/launcher/supervise/test_no_orphans.py (a few trials, fixed seed; each launcher
once), benchmarks/chaos.py (N trials, a table) and benchmarks/bench_orphans.py (the time).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import subprocess
import threading
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
LAUNCHERS = ("run", "debug", "node-launch", "batch")
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
    """`trials` trials, victims and moments drawn from random.Random(seed): the victims in
    shuffled rounds (each victim once per round, so a few trials kill different kinds of
    process), each moment uniform in 0..`longest_s` s after both ranks started."""
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < trials:
        order += rng.sample(list(victims), len(victims))
    return [Trial(i + 1, order[i], round(rng.uniform(0.0, longest_s), 1))
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


_LOADING = threading.Lock()  # trials may run side by side, in threads: one load at a time


def _loadable(ckpt: Path) -> bool:
    with _LOADING:
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


# ---------------------------------------------------------------------------------------------
# kill -9 of a launcher
# ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_render(job: Path, out: Path) -> Path:
    """A `packrun render --slurm` run directory of `job` on one node, two workers."""
    from launcher.core.spec import load_job
    from launcher.render.artifacts import write_run_dir
    spec = load_job(job, {"nodes": 1, "cards_per_node": 2, "master_addr": "127.0.0.1",
                          "master_port": _free_port()})
    run_dir, _ = write_run_dir(spec, slurm=True, out=str(out))
    return run_dir


def no_slurm_env() -> dict[str, str]:
    return packrun_env({k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})


def batch_env(bin_dir: Path, restart: int = 0) -> dict[str, str]:
    """The environment of job.sbatch run by hand, with a stand-in srun in `bin_dir` that runs
    the step's one task (msrun.sh of node 0) itself."""
    srun = bin_dir / "srun"
    if not srun.exists():
        bin_dir.mkdir(parents=True, exist_ok=True)
        srun.write_text('#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\n'
                        'export SLURM_NODEID=0\nexec "$@"\n')
        srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    return no_slurm_env() | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "26",
                             "SLURM_JOB_NODELIST": "localhost",
                             "SLURM_RESTART_COUNT": str(restart)}


NODE_FLAGS = ("--node_rank=0", "--master_addr=127.0.0.1")


@dataclass
class Launch:
    kind: str
    proc: subprocess.Popen
    run_dir: Path | None      # None until the launcher made it (run, debug)
    root: Path
    name: str
    ranks: int

    def find_run_dir(self) -> Path | None:
        if self.run_dir is None:
            self.run_dir = _new_run_dir(self.root, self.name)
        return self.run_dir


def start_launcher(kind: str, job: Path, work: Path, name: str) -> Launch:
    """Start launcher `kind` (LAUNCHERS) on `job`, output discarded; run directories in `work`."""
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kind in ("run", "debug"):
        args = ["run", job, "--workers=2"] if kind == "run" else ["debug", job]
        proc = subprocess.Popen(packrun_argv(*args, f"--name={name}", f"--output_dir={work}"),
                                cwd=REPO, env=packrun_env(), **quiet)
        return Launch(kind, proc, None, work, name, 2 if kind == "run" else 1)
    run_dir = slurm_render(job, work)
    if kind == "node-launch":
        proc = subprocess.Popen(packrun_argv("node-launch", run_dir, *NODE_FLAGS), cwd=REPO,
                                env=no_slurm_env(), **quiet)
    else:
        proc = subprocess.Popen(["bash", str(run_dir / "job.sbatch")], cwd=run_dir,
                                env=batch_env(work / "bin"), **quiet)
    return Launch(kind, proc, run_dir, work, name, 2)


def lock_free(run_dir: Path) -> bool:
    from launcher.core.errors import UserError
    from launcher.core.rundir.lock import acquire
    try:
        acquire(run_dir, "chaos").release()
        return True
    except UserError:
        return False


def kill_launcher(launch: Launch, after_s: float = 2.0,
                  bound_s: float = GONE_BOUND_S) -> tuple[Path, float, int]:
    """Once every rank has started (its pid file), wait `after_s`, SIGKILL the launcher; then
    (run directory, seconds until no process names the run directory and its lock is free,
    how many processes were running when it was killed). AssertionError past `bound_s`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        run_dir = launch.find_run_dir()
        if run_dir and all((run_dir / "logs" / f"worker_{r}.pid").exists()
                           for r in range(launch.ranks)) and processes_of(run_dir):
            break
        if launch.proc.poll() is not None:
            raise AssertionError(f"{launch.kind} ended ({launch.proc.returncode}) before its "
                                 "ranks started")
        if time.monotonic() > deadline:
            raise AssertionError(f"the ranks of {launch.kind} did not start")
        time.sleep(0.2)
    time.sleep(after_s)
    running = len(processes_of(run_dir))
    try:
        launch.proc.send_signal(signal.SIGKILL)
        launch.proc.wait()
        t0 = time.monotonic()
        while processes_of(run_dir) or not lock_free(run_dir):
            if time.monotonic() - t0 > bound_s:
                raise AssertionError(f"kill -9 of {launch.kind}: still running after {bound_s} "
                                     f"s: {processes_of(run_dir)}")
            time.sleep(0.05)
        return run_dir, time.monotonic() - t0, running
    finally:
        for pid in pids_of(run_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
