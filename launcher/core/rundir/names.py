"""Names of the files in run and sweep directories, every PACKRUN_* environment variable, the
run directory's schema number, and the exit statuses packrun's processes agree on.

A run directory is self-describing: everything `status`, `report`, resume and requeue need is
read from it. Every writer and reader takes the names from here (the launch templates through
`template_names()`); tests/test_architecture.py fails on a name spelt anywhere else.
"""

from pathlib import Path

from launcher.core.errors import EXIT_USER_ERROR  # noqa: F401 (bad input: 2, never retried)

# The schema of job.json, run_state.json and failure.json, written into each as "schema"
# (launcher/core/rundir/schema.py reads it): a file without the field is schema 1 (packrun before
# the node entry point, `python -m launcher.node`); bump when a reader of this version would
# misread a file written by the next.
RUN_DIR_SCHEMA = 2

JOB_JSON = "job.json"            # the resolved spec (launcher/core/rundir/job_json.py)
METRICS = "metrics.jsonl"        # one row per epoch, main rank only
BEST_CKPT = "best.ckpt"          # network at the best validation accuracy
LAST_CKPT = "last.ckpt"          # resumable: network + optimizer state + epoch/step counters
LAST_POINT = "last.json"         # {"epoch": epochs done, "step": steps of the next}: last.ckpt's
CLASSES_JSON = "classes.json"    # class names in label order (export, predict)
LOGS = "logs"                    # logs/worker_<rank>.log, logs/scheduler.log, ...
LAUNCHER_LOG = f"{LOGS}/launcher.log"  # `packrun run`: the launch script's own output
WORKER_LOG_PREFIX = f"{LOGS}/worker_"  # + <rank>.log / .exit / .pid / .error.json
SCHEDULER_LOG = f"{LOGS}/scheduler.log"  # MindSpore's scheduler process (msrun, mpirun on CPU)
ASCEND_LOG_PREFIX = f"{LOGS}/ascend/rank_"  # + <rank>/: CANN's plog of each rank
MPIRUN_OUTPUT = f"{LOGS}/mpirun"  # Open MPI's --output-filename: <it>/1/rank.<rank>/stdout
NODE_OUTPUT = f"{LOGS}/msrun-node%n.out"  # a Slurm job's msrun.sh output per node (srun %n)
RANKS_DIR = "ranks"  # ranks/<rank>/: each worker's working directory
SLURM_JOB_ID = "slurm_job_id"    # written by `packrun submit` (and by a sweep's array tasks)
SLURM_OUTPUT_GLOB = "slurm-*.out"  # the batch script's output, slurm-<job id>.out
# TensorBoard event files (src/training/tensorboard_events.py), rank 0 only: the run's curves,
# pictures and job in TB_DIR, its HParams session (the compared job keys, best and final
# accuracy) in TB_HPARAMS_DIR. One file per attempt, named by start second, host, attempt, pid.
TB_DIR = "tb"
TB_HPARAMS_DIR = f"{TB_DIR}/hparams"
REPORT_HTML = "report.html"      # `packrun report` (launcher/runs/report.py)
# The pictures a run leaves when it ends (src/pictures/run.py), in the order a report shows them.
CURVES_PNG, PREDICTIONS_PNG, CONFUSION_PNG = "curves.png", "predictions.png", "confusion.png"
RUN_PICTURES = (CURVES_PNG, PREDICTIONS_PNG, CONFUSION_PNG)
# What `packrun render` writes to start the job: the batch script (Slurm), the launch script of
# one machine for each launcher, and the HCCL rank table.
JOB_SBATCH = "job.sbatch"
LAUNCH_SCRIPTS = {"msrun": "msrun.sh", "mpirun": "mpirun.sh", "rank_table": "rank_table.sh"}
RANK_TABLE_JSON = "rank_table.json"
# Created (on Slurm's warning signal by launcher/node/batch.py, or by hand) to ask a running
# job to stop after the current step and exit with EXIT_REQUEUE; last.ckpt (written at every
# epoch end) is where it resumes. Removed by the launcher when the job starts again.
PREEMPT_FLAG = "preempt.requested"
# Written by the control plane (launcher/core/rundir/attempts.py) when an attempt starts and
# ends: kind, attempt, max_restarts, state (a Phase), start time, pid; launcher/core/rundir/state.py
# reads it.
RUN_STATE = "run_state.json"
# What the run ran with (packrun, Python, MindSpore, numpy, native kernels, CANN, driver, hosts,
# cores, HCCL_* / MS_* / ASCEND_* / CUDA_* variables, rank table): rewritten at every attempt,
# compared with the one before (launcher/core/rundir/envrecord.py).
ENV_JSON = "env.json"
# The newest failed attempt's report (a copy of logs/attempt_<k>/failure.json).
FAILURE_JSON = "failure.json"

# Held (flock) by the one launch that writes this run directory; holds that launch's pid, host,
# start time and command as one JSON line (launcher/core/rundir/lock.py).
RUN_LOCK = "run.lock"

EXIT_REQUEUE = 75  # EX_TEMPFAIL: the workers stopped on request; start again to resume
# Seconds between SIGTERM and SIGKILL, for every stopper of a run's processes (the supervisor,
# the rendered launch scripts).
GRACE_S = 10.0

# A sweep directory (launcher/sweep): sweep.json lists the points, each an ordinary run directory.
SWEEP_JSON = "sweep.json"
SWEEP_FORMAT = 1                 # sweep.json's "format"
ARRAY_SBATCH = "job_array.sbatch"  # `packrun sweep --slurm`: ONE job array, task i = point i
CONSOLE_LOG = f"{LOGS}/console.out"  # a point's console output when points run in parallel

# Exported by a launcher (launcher/supervise/lifeline.py) to every process it starts: a random
# token; when the launcher dies, its watcher ends every process whose environment carries it.
LIFELINE_ENV = "PACKRUN_LIFELINE"
# Seconds between the watcher's SIGTERM and SIGKILL: the launcher is gone, nothing waits for
# the processes to finish a step (their run resumes from last.ckpt).
LIFELINE_GRACE_S = 2.0

# Exported by the control plane to the workers: the attempt number (1, 2, ...) of this launch.
ATTEMPT_ENV = "PACKRUN_ATTEMPT"
# TEST ONLY (tests/test_restarts.py): makes a worker fail on purpose, on the first attempt only.
# "ACTION:rank=R:epoch=E:step=S", ACTION one of kill (SIGKILL itself), raise (RuntimeError),
# exit2 (a UserError), stop (preempt.requested), hang / slow (in the data loader; slow takes
# ":seconds=X"); see src/testing/faults.py. Never set it in a real job.
FAULT_ENV = "PACKRUN_TEST_FAULT"
TRACE_ENV = "PACKRUN_TEST_TRACE_STEPS"  # TEST ONLY: "1" prints `trained step E.S` every step

# Set to "1" by the launcher in a worker's environment when the console it copies the worker's
# output to is a terminal (the worker's own stdout is always a pipe): progress then uses \r.
CONSOLE_TTY_ENV = "PACKRUN_CONSOLE_TTY"
# Set by the launch scripts for the node side: the job's device (msrun's core binding) and one
# cpulist per local rank (the python shim binds each worker with taskset).
DEVICE_ENV = "PACKRUN_DEVICE"
RANK_CORES_ENV = "PACKRUN_RANK_CORES"
# Set by a site or a user: the cores a launch may use (a cpulist; launcher/core/cores.py) ...
CORES_ENV = "PACKRUN_CORES"
# ... the console's verbosity, quiet | normal | verbose (launcher/core/log.py; a flag wins) ...
LOG_LEVEL_ENV = "PACKRUN_LOG_LEVEL"
# ... "0" turns the CPU path's native kernels off, and their thread count (src/native).
NATIVE_ENV = "PACKRUN_NATIVE"
NATIVE_THREADS_ENV = "PACKRUN_NATIVE_THREADS"
# ... the compile cache (launcher/core/compile_cache.py): "0" turns it off, its directory (default
# $XDG_CACHE_HOME/packrun/compile or ~/.cache/packrun/compile), its size bound in GiB (default 2).
COMPILE_CACHE_ENV = "PACKRUN_COMPILE_CACHE"
COMPILE_CACHE_DIR_ENV = "PACKRUN_COMPILE_CACHE_DIR"
COMPILE_CACHE_MAX_ENV = "PACKRUN_COMPILE_CACHE_MAX_GIB"


def slurm_output(job_id: str) -> str:
    """The batch script's output in the run directory (#SBATCH --output, appended to)."""
    return SLURM_OUTPUT_GLOB.replace("*", job_id)


def worker_log(rank: int) -> str:
    return f"{WORKER_LOG_PREFIX}{rank}.log"


def worker_exit(rank: int) -> str:
    """Written by each worker as it exits: its exit status. A worker whose process is gone
    without this file was killed (signal, OOM killer, node loss)."""
    return f"{WORKER_LOG_PREFIX}{rank}.exit"


# Every rank's exit file, relative to the run directory (a glob).
WORKER_EXIT_GLOB = f"{WORKER_LOG_PREFIX}*.exit"


def read_exit_status(run_dir: str | Path, rank: int) -> int | None:
    """The exit status rank `rank` left in its exit file, or None (none yet, killed, unreadable)."""
    try:
        return int((Path(run_dir) / worker_exit(rank)).read_text().strip())
    except (OSError, ValueError):
        return None


def node_lock(node_rank: int) -> str:
    """The lock of one node's share of a run: RUN_LOCK on node 0 (where debug, run, the batch
    script and node-launch 0 run), run.node<N>.lock for node-launch on node N > 0."""
    return RUN_LOCK if node_rank == 0 else f"run.node{node_rank}.lock"


def worker_error(rank: int) -> str:
    """Written by a worker that dies of an exception: type, message, traceback, epoch, step."""
    return f"{WORKER_LOG_PREFIX}{rank}.error.json"


def attempt_logs(attempt: int) -> str:
    """Where attempt `attempt` (1, 2, ...) keeps its logs once it ended (its failure.json too)."""
    return f"{LOGS}/attempt_{attempt}"


def template_names() -> dict:
    """The protocol's names as the launch templates receive them (render context `files`)."""
    return dict(preempt_flag=PREEMPT_FLAG, exit_requeue=EXIT_REQUEUE, logs=LOGS,
                worker_exit_glob=WORKER_EXIT_GLOB, rank0_exit=worker_exit(0),
                attempt_env=ATTEMPT_ENV, worker_log_prefix=WORKER_LOG_PREFIX,
                scheduler_log=SCHEDULER_LOG, ascend_log_prefix=ASCEND_LOG_PREFIX,
                mpirun_output=MPIRUN_OUTPUT, node_output=NODE_OUTPUT, ranks_dir=RANKS_DIR,
                msrun_sh=LAUNCH_SCRIPTS["msrun"], rank_table_json=RANK_TABLE_JSON,
                run_lock=RUN_LOCK, device_env=DEVICE_ENV, rank_cores_env=RANK_CORES_ENV,
                console_tty_env=CONSOLE_TTY_ENV, job_json=JOB_JSON, slurm_job_id=SLURM_JOB_ID,
                job_sbatch=JOB_SBATCH)


# A launch over ssh (`packrun run --nodes=N --hosts=...`, launcher/multinode): multinode/ holds the
# plan (hosts as ssh reaches them, ssh options, each node's address) and, per node, the state
# its node program writes (state, pid, host, how it ended); logs/node<K>.out is that node's
# launch script output. TOKEN_PREFIX: the file a preflight writes on node 0's side and reads
# back on every node (shared storage at the same path), removed at once.
NODES_DIR = "multinode"
NODES_PLAN = f"{NODES_DIR}/plan.json"
TOKEN_PREFIX = ".packrun-token-"


def node_state(node: int) -> str:
    """One node's state, written by its node program (`python -m launcher.node host-run`):
    started, training, finished, failed, stopped; its pid and process group; how it ended."""
    return f"{NODES_DIR}/node{node}.json"


def node_out(node: int) -> str:
    """One node's launch script output (msrun's, rank_table.sh's) in a launch over ssh."""
    return f"{LOGS}/node{node}.out"


def worker_progress(rank: int) -> str:
    """Each rank's progress record (launcher/core/rundir/progress.py): one JSON object, replaced
    after every training step, evaluation batch and phase change. The stall watchdog, the console
    and the TensorBoard writer read it: one record, several readers."""
    return f"{WORKER_LOG_PREFIX}{rank}.progress"


# Every rank's progress record, relative to the run directory (a glob).
WORKER_PROGRESS_GLOB = f"{WORKER_LOG_PREFIX}*.progress"


def worker_stack(rank: int) -> str:
    """Each rank's stack dumps: the worker registers Python's faulthandler on STACK_SIGNAL with
    this file (every thread's Python stack, appended per request); the stall watchdog
    (launcher/supervise/watchdog.py) sends the signal and appends py-spy's native frames."""
    return f"{WORKER_LOG_PREFIX}{rank}.stack"


# The signal that asks a worker for its Python stacks. SIGUSR2: MindSpore 2.10 catches SIGINT,
# SIGCHLD and SIGBUS (and msrun SIGINT / SIGTERM), none of the user signals; SIGUSR1 is the
# Slurm warning packrun's batch program and node-launch turn into a stop request.
STACK_SIGNAL_NAME = "SIGUSR2"

# The signal that wakes a process of a MindSpore CPU cluster from one of MindSpore's fixed
# sleeps (src/training/cluster_wake.py). SIGWINCH: its default action is to ignore it, so a wake
# that reaches a process before (or without) the handler does nothing; MindSpore does not use it.
WAKE_SIGNAL_NAME = "SIGWINCH"

# The exit status of an attempt the stall watchdog ended (timeout(1)'s): a failure, retried
# within max_restarts like a dead rank.
EXIT_STALLED = 124


def worker_pid(rank: int) -> str:
    """Written by each worker as it starts: its pid, which launchers' logs name (msrun: "Worker
    process PID exit with exception. Error code: -9"), so a killed rank is found with its signal."""
    return f"{WORKER_LOG_PREFIX}{rank}.pid"
