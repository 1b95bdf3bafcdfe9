"""Writing a sweep directory: claim it, write every point's run directory (job.json and its
rendered launch) and sweep.json (read back by launcher/core/rundir/sweepdir.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.rundir.names import JOB_JSON, LOGS, SWEEP_FORMAT, SWEEP_JSON
from launcher.render.artifacts import render_artifacts
from launcher.sweep.plan import Plan


def create_sweep_dir(planned: Path) -> Path:
    """Claim `planned` (or `planned-2`, ... when a sweep of the same second has it) with mkdir,
    as run directories are claimed."""
    try:
        planned.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as e:
        raise UserError(f"cannot create output directory {planned.parent} ({e.strerror}); set "
                        "output_dir to a writable directory") from None
    path, n = planned, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = planned.with_name(f"{planned.name}-{n}")
        except PermissionError:
            raise UserError(f"cannot create a sweep directory in {planned.parent}: permission "
                            "denied; set output_dir to a writable directory") from None


def write_sweep(plan: Plan) -> Path:
    """The sweep directory with sweep.json and every point's run directory (job.json and its
    rendered launch). Paths inside the artifacts were rendered for the planned directory name;
    when that name was taken (two sweeps in one second), render again for the one claimed."""
    sweep_dir = create_sweep_dir(plan.sweep_dir)
    rerender = sweep_dir != plan.sweep_dir
    for p, files in zip(plan.points, plan.artifacts):
        run_dir = sweep_dir / p.name
        (run_dir / LOGS).mkdir(parents=True)
        if rerender and files:
            files = render_artifacts(p.spec, run_dir, slurm=plan.how == "slurm")
        write_atomic(run_dir / JOB_JSON, spec_to_json(p.spec))
        for rel, text in files.items():
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(run_dir / rel, text, 0o755 if text.startswith("#!") else None)
    doc = {"format": SWEEP_FORMAT, "name": plan.base.name, "job": str(Path(plan.job).resolve()),
           "created": time.strftime("%Y-%m-%d %H:%M:%S"), "how": plan.how,
           "parallel": plan.parallel, "keys": plan.keys,
           "points": [{"index": p.index, "dir": p.name, "overrides": p.overrides,
                       "values": {k: getattr(p.spec, k) for k in plan.keys}}
                      for p in plan.points]}
    write_atomic(sweep_dir / SWEEP_JSON, json.dumps(doc, indent=2) + "\n")
    return sweep_dir
