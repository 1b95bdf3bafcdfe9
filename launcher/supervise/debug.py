"""`packrun debug`: one worker process on this machine, output to the console and its log."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from launcher.core.errors import EXIT_USER_ERROR, UserError
from launcher.core.log import console, get_logger
from launcher.core.paths import WORKER_SCRIPT
from launcher.core.rank_env import worker_env
from launcher.core.rundir import attempts
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.layout import new_run_dir
from launcher.core.rundir.lock import acquire
from launcher.core.rundir.names import (
    ATTEMPT_ENV,
    EXIT_REQUEUE,
    JOB_SBATCH,
    LAST_CKPT,
    LAUNCH_SCRIPTS,
    PREEMPT_FLAG,
    worker_exit,
    worker_log,
)
from launcher.core.spec import JobSpec, load_job
from launcher.preflight.checks import check_debug_run
from launcher.preflight.data import preflight
from launcher.preflight.resume import resume_target
from launcher.supervise import lifeline, restarts
from launcher.supervise.processes import run_streaming, stop
from launcher.supervise.watchdog import Watchdog, watching

log = get_logger(__name__)



def debug_spec(spec: JobSpec) -> tuple[int, Path]:
    """Preflight, run directory, one worker; (exit status, run directory)."""
    summary = preflight(spec)
    check_debug_run(spec)
    run_dir = new_run_dir(spec)
    with acquire(run_dir, "packrun debug") as lock, lifeline.hold(lock, run_dir):
        print(f"packrun: run directory {run_dir}", flush=True)  # a result: also under --quiet
        log.info(f"packrun: {summary['train_images']} train / {summary['val_images']} val images "
                 f"in {len(summary['classes'])} classes ({summary['images_checked']} checked)")
        return run_worker(run_dir), run_dir


def run_worker(run_dir: Path) -> int:
    """One worker in `run_dir` (it resumes from last.ckpt when there is one), restarted up to
    max_restarts times after a failure (launcher/core/rundir/attempts.py); its exit status."""
    spec = spec_from_json(run_dir)
    allowed = attempts.max_restarts(spec, "debug")
    rc = restarts.with_restarts(run_dir, "debug", 1, allowed,
                                lambda attempt: _worker_once(run_dir, attempt, spec))
    if rc == 0:
        status = "finished"
    elif rc == EXIT_REQUEUE:
        status = f"stopped on request; continue with: packrun debug --resume {run_dir}"
    else:
        status = f"failed (exit {rc}); log: {run_dir / worker_log(0)}"
        if (run_dir / LAST_CKPT).exists() and rc != EXIT_USER_ERROR:
            status += ("\npackrun: continue from the last completed epoch: "
                       f"packrun debug --resume {run_dir}")
    if rc == 0 or rc == EXIT_REQUEUE:
        log.info(f"packrun: run {status}")
    else:
        log.error(f"packrun: run {status}")
    print(f"packrun: run directory {run_dir}", flush=True)
    return rc


def _worker_once(run_dir: Path, attempt: int, spec: JobSpec | None = None) -> attempts.Result:
    """One start of the worker; with the job's `spec`, under the stall watchdog."""
    (run_dir / PREEMPT_FLAG).unlink(missing_ok=True)
    (run_dir / worker_exit(0)).unlink(missing_ok=True)
    received: dict = {}
    child: list = []  # the worker, for the stall watchdog's stop
    watchdog = Watchdog(run_dir, spec, attempt, 1) if spec else None
    with watching(watchdog, lambda: stop(child[0])) as watch:
        rc = run_streaming([sys.executable, WORKER_SCRIPT, run_dir], run_dir / worker_log(0),
                           env=worker_env() | {ATTEMPT_ENV: str(attempt)}, console=console(),
                           received=received, started=child.append)
    if watch.report is not None:
        return attempts.Result(**watch.result_fields())
    if received.get("signal") is not None:
        return attempts.Result(rc, reason=f"stopped by {signal.Signals(received['signal']).name}",
                               user_stop=True)
    if rc == 0 or rc == EXIT_REQUEUE:
        return attempts.Result(rc)
    sig = rc - 128 if rc > 128 and not (run_dir / worker_exit(0)).exists() else None
    how = f"was killed by signal {sig}" if sig else f"exited with status {rc}"
    return attempts.Result(rc, 0, sig, None if sig else rc, f"rank 0 {how}")


# Files a run directory made by `packrun run`, `render` or `submit` holds and a debug run's lacks.
LAUNCH_FILES = (JOB_SBATCH, *LAUNCH_SCRIPTS.values())


def debug_resume(resume: str) -> int:
    """`packrun debug --resume RUN_DIR`: run the worker again in a debug run's directory; it
    continues from RUN_DIR/last.ckpt (the last completed epoch)."""
    run_dir, spec = resume_target(resume)
    launch = next((f for f in LAUNCH_FILES if (run_dir / f).exists()), None)
    if launch == JOB_SBATCH:
        raise UserError(f"{run_dir} holds job.sbatch: it is a Slurm run; let Slurm requeue it "
                        "(scontrol requeue JOBID) rather than resume it as a one-worker debug run")
    if launch:
        raise UserError(f"{run_dir} holds {launch}: it was rendered for a data-parallel launch, "
                        "which one debug worker would not continue faithfully (other shards and "
                        f"steps per epoch); use packrun run --resume {run_dir}")
    with acquire(run_dir, "packrun debug --resume") as lock, lifeline.hold(lock, run_dir):
        if (run_dir / LAST_CKPT).exists():
            log.info(f"packrun: resuming {spec.name} in {run_dir}")
        else:  # rendered and never started (the demo's and the sweeps' runs), or killed early
            log.info(f"packrun: starting {spec.name} in {run_dir} (no {LAST_CKPT} yet: "
                     "from epoch 1)")
        return run_worker(run_dir)


def debug_run(job: str | None, overrides: dict, resume: str | None = None) -> int:
    if resume:
        if job or overrides:
            raise UserError("--resume RUN_DIR continues that directory's job as it was; give no "
                            "job file or other flags with it")
        return debug_resume(resume)
    if not job:
        raise UserError("give a job file: packrun debug JOB [--key=value ...] (or --resume "
                        "RUN_DIR)")
    return debug_spec(load_job(job, overrides))[0]
