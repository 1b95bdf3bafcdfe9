"""`packrun sweep --slurm`: a sweep as ONE Slurm job array, followed and cancelled as a whole.

Every point is rendered exactly as `packrun submit` renders a job (its own job.sbatch and
msrun.sh); templates/job_array.sbatch.j2 adds only the array: task i runs point i's job.sbatch,
so a point may be multi-card or multi-node, and its preemption / requeue / resume logic is that
of a single job (a requeue of task i, `scontrol requeue <task job id>`, reruns point i only).
One array has one resource request, so the points must agree on their #SBATCH options, which
render builds as data (launcher/render/sbatch.py): the array prints point 1's.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.log import get_logger
from launcher.core.paths import REPO
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.names import ARRAY_SBATCH, JOB_JSON, JOB_SBATCH, SLURM_JOB_ID
from launcher.core.rundir.sweepdir import read_sweep
from launcher.core.spec import JobSpec
from launcher.render import shellsafe
from launcher.render.artifacts import environment, render_template
from launcher.render.sbatch import PER_JOB, sbatch_options
from launcher.slurm import client as slurm
from launcher.sweep.plan import Plan

log = get_logger(__name__)

POINT_SCRIPT = JOB_SBATCH


def _options(spec: JobSpec, run_dir: Path) -> list[str]:
    """A point's #SBATCH lines that the array shares: packrun's own (launcher/render/sbatch.py)
    but the ones the array sets for itself (its name, its output), then the site's."""
    return [o.line() for o in sbatch_options(spec, run_dir) if o.name not in PER_JOB] \
        + [f"#SBATCH {option}" for option in spec.sbatch_extra]


def check_uniform(plan: Plan) -> None:
    """One array, one resource request: every point's #SBATCH options must be the same."""
    first = _options(plan.points[0].spec, plan.sweep_dir / plan.points[0].name)
    for p in plan.points[1:]:
        other = _options(p.spec, plan.sweep_dir / p.name)
        if other != first:
            diff = next((b for a, b in zip(first + [""] * len(other), other) if a != b),
                        "(fewer options)")
            raise UserError(f"--slurm: sweep point {p.index + 1} ({p.label(plan.keys)}) needs "
                            f"{diff.strip()!r} where point 1 has other Slurm resources; one job "
                            "array has one resource request: sweep keys that leave nodes, "
                            "cards_per_node, gres, partition, time ... alone, or submit such "
                            "points as separate sweeps")


def write_array_script(plan: Plan, sweep_dir: Path) -> Path:
    read = read_sweep(sweep_dir)
    run_dirs = [str(p["path"]) for p in read["points"]]
    if any(c.isspace() for c in str(sweep_dir)):
        raise UserError(f"sweep directory {sweep_dir} contains a space, which #SBATCH --output "
                        "cannot hold; choose an output_dir without spaces")
    # point 1's options, the same list its job.sbatch prints (check_uniform: every point's)
    first = plan.points[0].spec
    options = [o for o in sbatch_options(first, read["points"][0]["path"])
               if o.name not in PER_JOB]
    text = render_template(environment(plan.base.template_dir), "job_array.sbatch.j2",
        name=plan.base.name, n=len(run_dirs), parallel=min(plan.parallel, len(run_dirs)),
        sweep_dir=str(sweep_dir), points=run_dirs, sbatch_options=options,
        sbatch_extra=[shellsafe.verbatim(option) for option in first.sbatch_extra],
        python=sys.executable, repo=str(REPO), point_script=POINT_SCRIPT,
        job_id_file=SLURM_JOB_ID, job_json=JOB_JSON)
    path = sweep_dir / ARRAY_SBATCH
    write_atomic(path, text, 0o755)
    return path


def submit_array(sweep_dir: Path) -> str:
    """sbatch the sweep's job_array.sbatch (with the environment `packrun submit` gives a job);
    records and returns the array's job id."""
    job_id = slurm.sbatch(sweep_dir / ARRAY_SBATCH, cwd=sweep_dir)
    write_atomic(sweep_dir / SLURM_JOB_ID, job_id + "\n")
    return job_id


# ---------------------------------------------------------------------------------------------
# The array's tasks
# ---------------------------------------------------------------------------------------------

def _task_ids(text: str) -> list[int]:
    """ArrayTaskId as scontrol prints it: 3, or pending tasks as 0-3%2 / 1,3-4."""
    ids: list[int] = []
    for part in text.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            ids += range(int(lo), int(hi) + 1) if hi.isdigit() else [int(lo)]
    return ids


def array_tasks(array_id: str) -> dict[int, dict] | None:
    """{task: {"state", "job_id", "restarts", "exit"}} from `scontrol show job ARRAY`; None when
    slurmctld no longer knows the array."""
    lines = slurm.show_job(array_id)
    if lines is None:
        return None
    tasks: dict[int, dict] = {}
    for line in lines:
        f = dict(re.findall(r"(?:^|\s)([A-Za-z]+)=(\S*)", line))
        if f.get("ArrayJobId") != array_id:
            continue
        for t in _task_ids(f.get("ArrayTaskId", "")):
            tasks[t] = {"state": f.get("JobState", "UNKNOWN"), "job_id": f.get("JobId", ""),
                        "restarts": int(f.get("Restarts", "0") or 0),
                        "exit": f.get("ExitCode", "")}
    return tasks


def _poll(array_id: str) -> dict[int, dict] | None:
    deadline = time.monotonic() + slurm.OUTAGE_S
    while True:
        try:
            return array_tasks(array_id)
        except slurm.SlurmUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(2 * slurm.POLL_S)


def follow_array(sweep_dir: str | Path, poll_s: float = 2 * slurm.POLL_S) -> int:
    """Follow every task of the sweep's array to its end, saying when each changes state
    (requeues included); 0 when every task COMPLETED."""
    sweep = read_sweep(sweep_dir)
    array_id = slurm.job_id_of(sweep["path"])
    points = {p["index"]: p for p in sweep["points"]}
    n = len(points)
    seen: dict[int, tuple] = {}
    tasks: dict[int, dict] = {}
    try:
        while True:
            now = _poll(array_id)
            if now is None:  # slurmctld forgot the array: every task ended
                break
            tasks |= now
            for t, info in sorted(now.items()):
                key = (info["state"], info["restarts"])
                if seen.get(t) != key:
                    seen[t] = key
                    again = f", requeued {info['restarts']} time(s)" if info["restarts"] else ""
                    log.info(f"packrun sweep: task {t} (point {t + 1}/{n} {points[t]['dir']}) "
                             f"{info['state']} (job {info['job_id']}{again})")
            if len(tasks) >= n and all(tasks[t]["state"] in slurm.ENDED for t in points):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        log.info(f"packrun sweep: stopped following job array {array_id}; it keeps running: "
                 f"packrun ls {sweep['path'].parent} / packrun cancel {sweep['path']}")
        return 130
    states = [tasks.get(t, {}).get("state", "UNKNOWN") for t in sorted(points)]
    done = sum(s == "COMPLETED" for s in states)
    log.info(f"packrun sweep: job array {array_id}: {done} of {n} task(s) COMPLETED"
             + ("" if done == n else "; " + ", ".join(
                 f"task {t} {s}" for t, s in enumerate(states) if s != "COMPLETED")))
    return 0 if done == n else 1


def cancel_array(array_id: str) -> str:
    """scancel a sweep's job array: every task, pending or running."""
    tasks = array_tasks(array_id)
    alive = {t: i for t, i in (tasks or {}).items() if i["state"] not in slurm.ENDED}
    if not alive:
        return f"job array {array_id} already ended"
    slurm.scancel(array_id)
    states = ", ".join(f"task {t} {i['state']}" for t, i in sorted(alive.items()))
    return f"cancelled job array {array_id}: {len(alive)} task(s) ({states})"

