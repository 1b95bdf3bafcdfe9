"""`packrun debug`: one worker process on this machine, output to the console and its log."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from launcher.preflight import preflight
from launcher.processes import run_streaming
from launcher.rundir import new_run_dir
from launcher.runfiles import CONSOLE_TTY_ENV
from launcher.spec import JobSpec, load_job

REPO = Path(__file__).resolve().parent.parent
WORKER_SCRIPT = REPO / "src" / "train.py"


def worker_env(base: dict | None = None) -> dict:
    """The environment a worker process gets: unbuffered output so logs are live, and the
    repository importable even without `pip install -e .`."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("GLOG_v", "3")  # MindSpore's C++ INFO/WARNING chatter off; errors still show
    env[CONSOLE_TTY_ENV] = "1" if sys.stdout.isatty() else "0"
    return env


def debug_spec(spec: JobSpec, log=print) -> tuple[int, Path]:
    """Preflight, run directory, one worker; (exit status, run directory)."""
    summary = preflight(spec)
    run_dir = new_run_dir(spec)
    log(f"packrun: run directory {run_dir}")
    log(f"packrun: {summary['train_images']} train / {summary['val_images']} val images in "
        f"{len(summary['classes'])} classes ({summary['images_checked']} checked)")
    rc = run_streaming([sys.executable, WORKER_SCRIPT, run_dir], run_dir / "logs" / "worker_0.log",
                       env=worker_env())
    status = "finished" if rc == 0 else f"failed (exit {rc}); log: {run_dir / 'logs' / 'worker_0.log'}"
    log(f"packrun: run {status}\npackrun: run directory {run_dir}")
    return rc, run_dir


def debug_run(job: str, overrides: dict) -> int:
    return debug_spec(load_job(job, overrides))[0]
