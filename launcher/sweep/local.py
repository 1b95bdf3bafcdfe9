"""`packrun sweep` and `packrun render --sweep`: plan every point (launcher/sweep/plan.py), write
the sweep directory (launcher/sweep/sweepdir.py), then run the points on this machine or submit
them as one Slurm job array (launcher/sweep/array.py), and print the summary
(launcher/sweep/report.py).

Locally the points run one after another (`--parallel=N`: N at a time), each as the child
command that already runs such a directory (`packrun debug --resume POINT` or `packrun run
--resume POINT`), so supervision, signals and resume are exactly those of a single run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from launcher.core.errors import UserError
from launcher.core.log import STDERR, get_logger
from launcher.core.paths import importable
from launcher.core.rundir.names import CONSOLE_LOG, JOB_JSON
from launcher.core.rundir.sweepdir import read_sweep
from launcher.supervise import processes
from launcher.sweep import array as sweep_slurm
from launcher.sweep.plan import plan_sweep
from launcher.sweep.report import summary_text
from launcher.sweep.sweepdir import write_sweep

log = get_logger(__name__)


def point_command(how: str, run_dir: Path) -> list[str]:
    """The packrun command that runs one point's directory as a single run would."""
    cmd = "debug" if how == "debug" else "run"
    return [sys.executable, "-m", "launcher.cli.main", cmd, "--resume", str(run_dir)]


def run_local(sweep: dict, parallel: int) -> tuple[dict[int, int], int | None]:
    """Run the points, `parallel` at a time; ({index: exit status}, the signal that stopped
    the sweep or None). One at a time, a point's
    console is this console; several at a time, each point's goes to its logs/console.out and
    the console says when each starts and ends. Ctrl-C / SIGTERM stop every running point."""
    env = importable()
    todo = list(sweep["points"])
    n = len(todo)
    running: dict[int, tuple[subprocess.Popen, float, IO[bytes] | None]] = {}
    results: dict[int, int] = {}
    procs: list[subprocess.Popen] = []
    with processes.forward_signals(procs) as got:
        while todo or running:
            while todo and len(running) < parallel and got["signal"] is None:
                p = todo.pop(0)
                log.info(f"packrun sweep: point {p['index'] + 1}/{n} {p['dir']} started")
                os.utime(p["path"] / JOB_JSON)  # a run's start time (packrun ls) is job.json's
                out: IO[bytes] | None = (None if parallel == 1
                                         else open(p["path"] / CONSOLE_LOG, "ab"))
                proc = processes.spawn(point_command(sweep["how"], p["path"]), env=env,
                                       stdout=out)
                procs.append(proc)
                running[p["index"]] = (proc, time.monotonic(), out)
            if got["signal"] is not None and not running:
                break
            for index, (proc, t0, out) in list(running.items()):
                if proc.poll() is None:
                    continue
                if out is not None:
                    out.close()
                rc = processes.exit_code(proc.returncode)
                results[index] = rc
                del running[index]
                point = sweep["points"][index]
                state = "finished" if rc == 0 else f"failed (exit {rc})"
                log.info(f"packrun sweep: point {index + 1}/{n} {point['dir']} {state} in "
                         f"{time.monotonic() - t0:.0f} s")
            time.sleep(0.2)
        if got["signal"] is not None:
            for p in todo:
                log.info(f"packrun sweep: point {p['index'] + 1}/{n} {p['dir']} not started "
                         "(stopped)")
    return results, got["signal"]


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def _how(launcher, workers, slurm: bool) -> tuple[str, dict]:
    cli = {}
    if launcher is not None:
        cli["launcher"] = launcher
    if workers is not None:
        cli["cards_per_node"] = workers
    if slurm:
        return "slurm", cli
    return ("run" if cli else "debug"), cli


def sweep_command(job: str | None, overrides: dict, grid_items: list[str],
                  points_file: str | None, *, launcher=None, workers=None,
                  parallel: int | None = None,
                  slurm: bool = False, wait: bool = False) -> int:
    """`packrun sweep`: plan (every point checked), write the sweep directory, run or submit."""
    how, extra = _how(launcher, workers, slurm)
    if wait and not slurm:
        raise UserError("--wait follows a Slurm job array: use it with --slurm (a local sweep "
                        "always runs to its end)")
    if job is None:
        raise UserError("give a job file: packrun sweep JOB --grid KEY=V1,V2 ...")
    plan = plan_sweep(job, {**overrides, **extra}, grid_items, points_file, how=how,
                      parallel=parallel)
    if how == "slurm":
        sweep_slurm.check_uniform(plan)
    sweep_dir = write_sweep(plan)
    sweep = read_sweep(sweep_dir)
    what = {"debug": "debug runs", "run": f"{plan.points[0].spec.launcher} launches",
            "slurm": "one Slurm job array"}[how]
    log.info(f"packrun sweep: {len(plan.points)} point(s) over {', '.join(plan.keys)} as {what}; "
             f"sweep directory {sweep_dir}")
    if how == "slurm":
        sweep_slurm.write_array_script(plan, sweep_dir)
        job_id = sweep_slurm.submit_array(sweep_dir)
        log.info(f"packrun sweep: submitted Slurm job array {job_id} ({len(plan.points)} task(s), "
                 f"{plan.parallel} at a time); packrun ls {sweep_dir.parent} / "
                 f"packrun cancel {sweep_dir}")
        if not wait:
            return 0
        rc = sweep_slurm.follow_array(sweep_dir)
    else:
        results, stopped_by = run_local(sweep, plan.parallel)
        rc = 0 if len(results) == len(plan.points) and not any(results.values()) else 1
        if stopped_by is not None:
            rc = 128 + stopped_by
    print("\n" + summary_text(sweep_dir), flush=True)  # the result: also under --quiet
    return rc


def render_sweep_command(job: str, overrides: dict, grid_items: list[str],
                         points_file: str | None, *, slurm: bool = False,
                         parallel: int | None = None,
                         launcher=None, workers=None) -> str:
    """`packrun render --sweep`: the sweep directory with every point rendered; nothing starts.
    Returns what to run next."""
    how, extra = _how(launcher, workers, slurm)
    if how == "debug" and overrides.get("launcher"):
        how = "run"
    plan = plan_sweep(job, {**overrides, **extra}, grid_items, points_file, how=how,
                      parallel=parallel, check=False)
    if how == "slurm":
        sweep_slurm.check_uniform(plan)
    sweep_dir = write_sweep(plan)
    log.info(f"packrun: rendered sweep {sweep_dir}: {len(plan.points)} point(s) over "
             f"{', '.join(plan.keys)}", extra=STDERR)
    if how == "slurm":
        script = sweep_slurm.write_array_script(plan, sweep_dir)
        return f"sbatch {shlex.quote(str(script))}"
    return "\n".join("packrun " + shlex.join(point_command(how, sweep_dir / p.name)[3:])
                     for p in plan.points)
