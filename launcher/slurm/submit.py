"""`packrun submit`: check the job, render it into a new run directory with job.sbatch
(launcher/render/artifacts.py, `slurm=True`), sbatch it, and with --wait follow it to its end
(launcher/slurm/client.py). Its own module: the commands that only read Slurm's state (`ls`,
`status`) need neither the preflight checks nor the renderer.
"""

from __future__ import annotations

import sys
from typing import TextIO

from launcher.core.spec import load_job
from launcher.preflight.checks import check_before_launch
from launcher.render.artifacts import write_run_dir
from launcher.slurm.client import follow, say, submit


def submit_command(job: str, overrides: dict, *, wait: bool = False, out: str | None = None,
                   console: TextIO | None = None) -> int:
    """`packrun submit`: check, render, sbatch, and with --wait follow the job to its end."""
    spec = load_job(job, overrides)
    check_before_launch(spec, slurm=True, out=out)
    run_dir, _ = write_run_dir(spec, slurm=True, out=out)
    print(f"packrun: run directory {run_dir}", file=console or sys.stdout, flush=True)  # result
    job_id = submit(run_dir)
    say(console, f"submitted Slurm job {job_id} ({spec.nodes} node(s) x {spec.cards_per_node} "
                 f"worker(s)); packrun status {run_dir}")
    return follow(run_dir, console) if wait else 0
