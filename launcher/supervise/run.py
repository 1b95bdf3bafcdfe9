"""`packrun run`: render a data-parallel launch for this machine and execute it, supervised.

The same files `packrun render` writes are what runs: the launch script of the run directory
(msrun.sh, mpirun.sh or rank_table.sh). The console follows rank 0's log; a failing rank takes
the whole job down and is named with the end of its log.
"""

from __future__ import annotations

from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.log import get_logger
from launcher.core.logtail import tail
from launcher.core.paths import WORKER_SCRIPT
from launcher.core.rank_env import worker_env
from launcher.core.rundir import attempts
from launcher.core.rundir.lock import acquire
from launcher.core.rundir.names import (
    ATTEMPT_ENV,
    EXIT_REQUEUE,
    LAUNCH_SCRIPTS,
    LAUNCHER_LOG,
    PREEMPT_FLAG,
    worker_log,
)
from launcher.core.spec import JobSpec, load_job
from launcher.preflight.checks import check_before_launch, check_port_free
from launcher.preflight.resume import resume_target
from launcher.render.artifacts import write_run_dir
from launcher.supervise import lifeline, restarts
from launcher.supervise.supervisor import Supervisor
from launcher.supervise.watchdog import Watchdog

log = get_logger(__name__)



def local_spec(job: str, overrides: dict, workers: int | None) -> JobSpec:
    if workers is not None:
        overrides = {**overrides, "cards_per_node": workers}
    spec = load_job(job, overrides)
    if spec.nodes != 1:
        raise UserError(f"this launch starts the workers of one machine; nodes is {spec.nodes}. "
                        "For several nodes: packrun run JOB --nodes=N --hosts=a,b (over ssh), "
                        "packrun submit (Slurm), or packrun render and the launch script on "
                        "every node")
    return spec


def execute(run_dir: Path, spec: JobSpec) -> int:
    """Run the rendered launch in `run_dir` under supervision, restarted from last.ckpt up to
    max_restarts times after a failure (launcher/core/rundir/attempts.py); the job's exit status."""
    allowed = attempts.max_restarts(spec, "run")
    log.info(f"packrun: {spec.launcher} with {spec.cards_per_node} worker(s); run directory "
             f"{run_dir}" + (f"; up to {allowed} restart(s)" if allowed else ""))
    code = restarts.with_restarts(run_dir, "run", spec.cards_per_node, allowed,
                                  lambda attempt: launch_once(run_dir, spec, attempt))
    return restarts.say_run_directory(run_dir, code)


def launch_once(run_dir: Path, spec: JobSpec, attempt: int) -> attempts.Result:
    """One attempt: the launch script, supervised."""
    (run_dir / PREEMPT_FLAG).unlink(missing_ok=True)
    script = run_dir / LAUNCH_SCRIPTS[spec.launcher]
    log.info(f"packrun: following {run_dir / worker_log(0)} (rank 0)"
             + (f", attempt {attempt}" if attempt > 1 else ""))
    env = worker_env() | {ATTEMPT_ENV: str(attempt)}
    world = spec.nodes * spec.cards_per_node
    outcome = Supervisor(run_dir, ["bash", str(script)], WORKER_SCRIPT, env, world=world,
                         watchdog=Watchdog(run_dir, spec, attempt, world)).run()
    if outcome.code == EXIT_REQUEUE:
        log.info(f"packrun: {outcome.reason}: packrun run --resume {run_dir}")
    elif outcome.code != 0:
        _report_failure(run_dir, outcome)
    return attempts.Result(outcome.code, outcome.failed_rank, outcome.signal, outcome.rank_exit,
                           outcome.reason, outcome.user_stop, stall=outcome.stall)


def _report_failure(run_dir: Path, outcome) -> None:
    log.error(f"packrun: run failed: {outcome.reason}")
    if outcome.failed_rank is not None:
        log_file = run_dir / worker_log(outcome.failed_rank)
        log.error(f"packrun: last lines of {log_file}:\n{tail(log_file)}")
    else:
        launcher_log = run_dir / LAUNCHER_LOG
        log.error(f"packrun: last lines of {launcher_log}:\n{tail(launcher_log)}")


def run_command(job: str | None, overrides: dict, workers: int | None = None,
                resume: str | None = None) -> int:
    if resume:
        run_dir, spec = resume_target(resume)
        if job or overrides or workers:
            raise UserError("--resume RUN_DIR runs that directory's job as it was rendered; give "
                            "no job file or other flags with it")
        if not (run_dir / LAUNCH_SCRIPTS[spec.launcher]).exists():
            raise UserError(f"{run_dir} has no {LAUNCH_SCRIPTS[spec.launcher]}: resume a run "
                            "made by `packrun run` or `packrun render`")
        lock = acquire(run_dir, "packrun run --resume")
        check_port_free(spec.master_port)
    else:
        if not job:
            raise UserError("give a job file: packrun run JOB --workers=N (or --resume RUN_DIR)")
        spec = local_spec(job, overrides, workers)
        check_before_launch(spec)
        run_dir, _ = write_run_dir(spec)
        lock = acquire(run_dir, "packrun run")
    with lock, lifeline.hold(lock, run_dir):  # killed, packrun leaves nothing running
        return execute(run_dir, spec)
