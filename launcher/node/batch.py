"""The Slurm batch protocol: one run of a job's job.sbatch, from the lock to the requeue.

job.sbatch picks the scheduler's address and port, then hands its srun line to this module:

    exec "$PYTHON" -m launcher.node batch "$RUN_DIR" -- srun ... bash "$RUN_DIR/msrun.sh"

`exec`: this process IS the batch shell's process, so Slurm's warning signal
(`#SBATCH --signal=B:USR1@N`, or `scancel --signal=USR1 --batch JOBID`), which goes to the batch
shell only, reaches it. In order:

  1. the run directory's lock (launcher/core/rundir/lock.py): a second launch (a local
     `--resume`, another job) is refused with exit status 2, naming the holder;
  2. with a warning signal (signal_before_s): the stop request and the ranks' exit statuses an
     earlier run of the job left are removed, and SIGUSR1 creates the stop request
     (preempt.requested): the workers stop after their current step, leaving last.ckpt;
  3. the attempt begins (launcher/core/rundir/attempts.py): attempt = SLURM_RESTART_COUNT + 1;
  4. the srun step starts (launcher/supervise/processes.py) and is waited for; after a stop
     request, only until rank 0 has stopped on request (exit status 75 in its exit file):
     msrun's teardown adds nothing after that but time; and only until a rank of this node
     (node 0, where msrun also runs the scheduler) leaves a failing exit status (neither 0
     nor 75), or msrun's output (logs/msrun-node0.out) says that a signal killed one: the
     attempt has failed, but this node's msrun would wait on until its scheduler stops hearing
     from that rank (half a minute and more), so the step is stopped at once, as `packrun run`
     stops a launch (the msrun of another node ends when its rank does, and srun's
     --kill-on-bad-exit ends the step, naming that node);
  5. the attempt ends and decides: completed (every rank finished with exit status 0, also
     when srun's own status is not: a crash while the processes shut down), restart or stop;
  6. stopped on request: requeue (`scontrol requeue`, launcher/slurm/client.py) and exit 0, or
     without requeue exit 75 (`packrun run --resume RUN_DIR`); failed: requeue while
     SLURM_RESTART_COUNT < max_restarts and exit 0, else exit with srun's status.

While the step runs, the stall watchdog (launcher/supervise/watchdog.py) reads the ranks'
progress records: when no rank has made progress for stall_timeout seconds it asks the ranks on
this node for their stacks, stops the step and fails the attempt (exit status 124, EXIT_STALLED):
requeued within max_restarts like any failure.

SIGINT / SIGTERM (scancel, the time limit) stop the step (TERM, then KILL), record the attempt
as stopped and end this process by the same signal, as the batch shell would have ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from launcher.core.errors import EXIT_UNAVAILABLE, EXIT_USER_ERROR, Unavailable, UserError
from launcher.core.rundir import attempts
from launcher.core.rundir.failure import killed_pids, killed_rank
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.lock import acquire
from launcher.core.rundir.names import (
    ATTEMPT_ENV,
    EXIT_REQUEUE,
    EXIT_STALLED,
    NODE_OUTPUT,
    PREEMPT_FLAG,
    WORKER_EXIT_GLOB,
    read_exit_status,
    worker_exit,
)
from launcher.core.spec import JobSpec
from launcher.slurm import client as slurm
from launcher.supervise import lifeline, processes
from launcher.supervise.watchdog import StallReport, Watchdog

POLL_S = 0.2  # how often the step and rank 0's exit file are looked at after a stop request
FAILED_EVERY = 5  # the ranks' exit files are looked at every FAILED_EVERY polls (once a second)


def say(text: str, err: bool = False) -> None:
    """One line of the batch output (slurm-<job id>.out), as the batch script's echo wrote it."""
    print(f"packrun: {text}", file=sys.stderr if err else sys.stdout, flush=True)


def own_job(env: dict) -> str:
    """The job this batch script is, as `scontrol requeue` must name it: SLURM_JOB_ID, or for a
    job array's task ARRAY_TASK (`packrun sweep --slurm`): one task's own job id is the array's
    id too, and `scontrol requeue ARRAY` requeues every task of the array, finished ones
    included (a failed task requeued its finished sibling, which ran again)."""
    array, task = env.get("SLURM_ARRAY_JOB_ID", ""), env.get("SLURM_ARRAY_TASK_ID", "")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID", "")


class Batch:
    """One run of the batch script in `run_dir`, whose srun line is `cmd`."""

    def __init__(self, run_dir: Path, cmd: Sequence[str], env: dict | None = None):
        self.run_dir, self.cmd = Path(run_dir), list(cmd)
        self.env = dict(os.environ if env is None else env)
        self.spec: JobSpec = spec_from_json(self.run_dir)
        self.job_id = self.env.get("SLURM_JOB_ID", "")
        self.restarts = int(self.env.get("SLURM_RESTART_COUNT") or 0)
        self.attempt = self.restarts + 1
        self.preemptible = self.spec.signal_before_s > 0
        self.stop_requested = False
        self.line: lifeline.Lifeline | None = None
        # the batch program ended the step: a stall, a rank that failed (attempts.batch_end)
        self.known: attempts.Result | None = None
        self._output_size = -1  # logs/msrun-node0.out's size when last read

    # -- the steps -----------------------------------------------------------------------------
    def run(self) -> int:
        try:
            lock = acquire(self.run_dir, f"job.sbatch (Slurm job {self.job_id or '?'})")
        except UserError as e:
            say(str(e), err=True)
            return EXIT_USER_ERROR
        # killed (kill -9), the batch program leaves nothing running: its srun step and the
        # local tasks end within seconds (launcher/supervise/lifeline.py)
        with lock, lifeline.hold(lock, self.run_dir) as self.line:
            self.env |= self.line.env
            if self.preemptible:
                self._clear_stale_request()
                signal.signal(signal.SIGUSR1, self._on_usr1)
            attempts.batch_begin(self.run_dir, self.attempt)
            say(f"job {self.job_id} (restart {self.restarts}) on "
                f"{self.env.get('SLURM_JOB_NODELIST', '?')}, scheduler "
                f"{self.env.get('MASTER_ADDR', '?')}:{self.env.get('MASTER_PORT', '?')}")
            rc = self._step()
            decision = attempts.batch_end(self.run_dir, self.attempt, rc, self.known)
            return self._decide(rc, decision)

    def _clear_stale_request(self) -> None:
        """A request that an earlier run of this job already served, and its exit statuses."""
        (self.run_dir / PREEMPT_FLAG).unlink(missing_ok=True)
        for stale in self.run_dir.glob(WORKER_EXIT_GLOB):
            stale.unlink(missing_ok=True)

    def _on_usr1(self, _signum, _frame) -> None:
        (self.run_dir / PREEMPT_FLAG).touch()
        self.stop_requested = True
        say("SIGUSR1: asking the workers to stop after their current step", err=True)

    def _step(self) -> int:
        """Run the srun step; its exit status (128 + N for signal N), or after a stop request
        that rank 0 served while srun still tears down, 128 + SIGUSR1 (as the interrupted
        `wait` of the batch shell said)."""
        env = self.env | {ATTEMPT_ENV: str(self.attempt)}
        watchdog = Watchdog(self.run_dir, self.spec, self.attempt, self.world)
        procs: list[subprocess.Popen] = []  # forwarded from before the spawn: none is lost
        with processes.forward_signals(procs) as got:
            proc = processes.spawn(self.cmd, env=env, stdout=None)
            procs.append(proc)
            try:
                if got["signal"] is not None:  # it came while the step was being started
                    processes.kill_group(proc, signal.SIGTERM)
                polls = 0
                while proc.poll() is None:
                    if self.stop_requested and \
                            read_exit_status(self.run_dir, 0) == EXIT_REQUEUE:
                        return 128 + signal.SIGUSR1
                    stall = watchdog.check()
                    if stall is not None:
                        return self._stalled(watchdog.report(stall))
                    polls += 1
                    if not self.stop_requested and polls % FAILED_EVERY == 0:
                        failed = self._failed_rank()
                        if failed is not None:
                            rank, exit_code, sig = failed
                            processes.stop(proc)
                            rc = processes.exit_code(proc.returncode) or 1  # never 0: it failed
                            self.known = attempts.rank_result(self.run_dir, rc, rank, exit_code,
                                                              sig)
                            say(f"{self.known.reason}; stopped the srun step", err=True)
                            return rc
                    time.sleep(POLL_S)
            finally:
                if proc.poll() is None:
                    processes.stop(proc)  # a step still tearing down ends with this job
        if got["signal"] is not None:
            self._stopped_by(got["signal"])
        return processes.exit_code(proc.returncode)

    def _failed_rank(self) -> tuple[int, int | None, int | None] | None:
        """(rank, exit status, signal) of a rank of node 0 (this node) that failed in this
        attempt (exit and pid files of earlier attempts were archived when it began): it left a
        failing exit status, or msrun's output says that a signal killed it. None while none
        has."""
        local = range(self.spec.cards_per_node)  # srun's node 0 runs ranks 0..cards-1
        present = {path.name for path in self.run_dir.glob(WORKER_EXIT_GLOB)}  # one listing
        exited = set()
        for rank in local:
            if Path(worker_exit(rank)).name in present:
                exited.add(rank)
                status = read_exit_status(self.run_dir, rank)
                if status not in (None, 0, EXIT_REQUEUE):
                    return rank, status, None
        output = self.run_dir / NODE_OUTPUT.replace("%n", "0")
        try:
            size = output.stat().st_size
            if size == self._output_size:  # nothing new said
                return None
            self._output_size = size
            killed = killed_pids(output.read_text(errors="replace"))
        except OSError:
            return None
        found = killed_rank(self.run_dir, [r for r in local if r not in exited], killed)
        return (found[0], None, found[1]) if found else None

    def _stalled(self, report: StallReport) -> int:
        """The stall watchdog found no progress (it has the stacks): the step ends (the finally
        of _step stops it) and the attempt fails like any other, requeued within max_restarts."""
        say(f"stalled: {report.reason}; stopping the srun step", err=True)
        self.known = attempts.Result(EXIT_STALLED, report.rank, reason=report.reason,
                                       stall=report.record)
        return EXIT_STALLED

    def _stopped_by(self, signum: int) -> None:
        """SIGINT / SIGTERM: the step was stopped; the attempt ends as stopped and this process
        by the same signal."""
        name = signal.Signals(signum).name
        allowed = attempts.batch_allowed(self.spec)
        attempts.end(self.run_dir, self.attempt,
                     attempts.Result(128 + signum, reason=f"stopped by {name}", user_stop=True),
                     restart_allowed=False, max_attempts=allowed + 1)
        say(f"{name}: stopped the srun step", err=True)
        if self.line is not None:
            self.line.release()  # its watcher gone: the run directory is free when this ends
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        sys.exit(128 + signum)  # (not reached: the signal ends this process)

    def _decide(self, rc: int, decision: str) -> int:
        if rc != 0 and decision == "completed":
            return 0  # a crash while the processes shut down: attempts.batch_end said so
        if self.preemptible and (self.run_dir / PREEMPT_FLAG).exists() and any(
                read_exit_status(self.run_dir, r) == EXIT_REQUEUE for r in range(self.world)):
            # stopped on request: a worker left exit status 75 in its exit file (msrun reports
            # it as 1, and kills the other workers when the first one exits)
            if self.spec.requeue:
                say(f"the workers stopped on request; requeueing job {self.job_id}")
                if self._requeue():
                    return 0
            else:
                say(f"the workers stopped on request; resume with: packrun run --resume "
                    f"{self.run_dir}")
            return EXIT_REQUEUE
        say(f"srun exited with status {rc}")
        if self.spec.requeue and decision == "restart":
            say(f"requeueing job {self.job_id} after a failure (attempt {self.attempt + 1} of "
                f"{attempts.max_restarts(self.spec, 'slurm') + 1})")
            if self._requeue():
                return 0
        return rc

    def _requeue(self) -> bool:
        try:
            slurm.requeue(own_job(self.env))
            return True
        except (UserError, Unavailable) as e:
            say(str(e), err=True)
            say(f"scontrol requeue failed; resume with: packrun run --resume {self.run_dir}",
                err=True)
            return False

    @property
    def world(self) -> int:
        return self.spec.nodes * self.spec.cards_per_node


def batch_main(argv: Sequence[str]) -> int:
    """`batch RUN_DIR -- CMD ...` (launcher/node/main.py)."""
    args = list(argv)
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m launcher.node batch RUN_DIR -- srun ... bash RUN_DIR/msrun.sh",
              file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return Batch(Path(args[0]), args[2:]).run()
    except UserError as e:
        say(f"error: {e}", err=True)
        return EXIT_USER_ERROR
    except Unavailable as e:  # an outage: not bad input (a requeue may try again)
        say(f"error: {e}", err=True)
        return EXIT_UNAVAILABLE
