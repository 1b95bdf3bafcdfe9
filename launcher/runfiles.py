"""Names of the files in a run directory, and the exit statuses packrun's processes agree on.

A run directory is self-describing: everything `status`, `report`, resume and requeue need is
read from it. Every writer and reader takes the names from here.
"""

JOB_JSON = "job.json"            # the resolved spec (launcher/spec.py)
METRICS = "metrics.jsonl"        # one row per epoch, main rank only
BEST_CKPT = "best.ckpt"          # network at the best validation accuracy
LAST_CKPT = "last.ckpt"          # resumable: network + optimizer state + epoch/step counters
CLASSES_JSON = "classes.json"    # class names in label order (export, predict)
LOGS = "logs"                    # logs/worker_<rank>.log, logs/scheduler.log, ...
SLURM_JOB_ID = "slurm_job_id"    # written by `packrun submit`
# Created (by job.sbatch's warning-signal trap, or by hand) to ask a running job to stop after
# the current step and exit with EXIT_REQUEUE; last.ckpt (written at every epoch end) is where
# it resumes. Removed by the launcher when the job starts again.
PREEMPT_FLAG = "preempt.requested"

EXIT_REQUEUE = 75  # EX_TEMPFAIL: the workers stopped on request; start again to resume

# Set to "1" by the launcher in a worker's environment when the console it copies the worker's
# output to is a terminal (the worker's own stdout is always a pipe): progress then uses \r.
CONSOLE_TTY_ENV = "PACKRUN_CONSOLE_TTY"


def worker_log(rank: int) -> str:
    return f"{LOGS}/worker_{rank}.log"


def worker_exit(rank: int) -> str:
    """Written by each worker as it exits: its exit status. A worker whose process is gone
    without this file was killed (signal, OOM killer, node loss)."""
    return f"{LOGS}/worker_{rank}.exit"
