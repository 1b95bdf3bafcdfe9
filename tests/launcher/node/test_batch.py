"""The Slurm batch protocol (launcher/node/batch.py), driven as job.sbatch drives it:
`python -m launcher.node batch RUN_DIR -- srun ...`, with fake `srun` and `scontrol` on PATH.
The fake srun records its arguments and plays the workers (their exit files, its own status);
the fake scontrol records its arguments and exits as told. One test per branch: completed,
stopped on request with and without requeue, failed and requeued, failed and given up, a
teardown crash after every rank finished, a second launch refused; and a requeue that fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.core.rundir.lock import acquire
from launcher.core.rundir.names import PREEMPT_FLAG, RUN_STATE, worker_exit
from launcher.core.spec import load_job
from launcher.render.artifacts import write_run_dir
from tests.helpers import REPO, wait_for

pytestmark = pytest.mark.unit

FAKE_SRUN = """#!/bin/sh
echo "$@" > "$RUN_DIR/srun.args"
echo $$ > "$RUN_DIR/srun.pid"
echo "$PACKRUN_ATTEMPT" > "$RUN_DIR/srun.attempt"
touch "$RUN_DIR/srun.started"
case "$FAKE_WORKERS" in
  complete) echo 0 > "$RUN_DIR/logs/worker_0.exit"; echo 0 > "$RUN_DIR/logs/worker_1.exit"
            exit 0 ;;
  teardown-crash)  # every rank finished, then the launcher crashed on its way out
            echo 0 > "$RUN_DIR/logs/worker_0.exit"; echo 0 > "$RUN_DIR/logs/worker_1.exit"
            exit 139 ;;
  stop-on-request)  # the workers stop at the request and exit 75; msrun then tears down for
                    # long (its scheduler waits for the workers it killed) and reports 1
            for _ in $(seq 200); do [ -e "$RUN_DIR/preempt.requested" ] && break; sleep 0.05; done
            echo 75 > "$RUN_DIR/logs/worker_0.exit"; echo 75 > "$RUN_DIR/logs/worker_1.exit"
            sleep 60; exit 1 ;;
  rank1-fails)  # rank 1 raises (exit 1); msrun kills rank 0, which leaves no exit status
            echo 1 > "$RUN_DIR/logs/worker_1.exit"; exit 1 ;;
  stall)  # two workers that report a few steps and then make no progress (FAKE_WORKER)
            "$FAKE_PYTHON" "$FAKE_WORKER" "$RUN_DIR" 0 &
            "$FAKE_PYTHON" "$FAKE_WORKER" "$RUN_DIR" 1 &
            wait; exit 1 ;;
esac
exit 3
"""
# A worker as the stall watchdog sees one: it answers the stack request as src/train.py does,
# writes progress records for its steps (rank 0: three, rank 1: two), then makes no progress.
FAKE_WORKER = """
import os, sys, time
from pathlib import Path
from launcher.core.rundir.progress import Event, Progress, Stage, write_progress
from src.train import answer_stack_requests

run_dir, rank = Path(sys.argv[1]), int(sys.argv[2])
answer_stack_requests(run_dir, rank)
p = Progress(rank=rank, pid=os.getpid(), attempt=int(os.environ["PACKRUN_ATTEMPT"]), seq=0,
             time=time.time(), stage=Stage.COMPILING)
for step in range(1, 4 - rank):
    p = p.advanced(event=Event.STEP, stage=Stage.TRAINING, epoch=1, step=step,
                   steps_per_epoch=5, global_step=step, time=time.time())
    write_progress(run_dir, p)


def stuck_for_good():
    while True:
        time.sleep(1)


stuck_for_good()
"""
FAKE_SCONTROL = """#!/bin/sh
[ "$1" = show ] && { echo vm; exit 0; }  # show hostnames: job.sbatch's scheduler address
echo "$@" >> "$RUN_DIR/scontrol.calls"
if [ "${FAKE_SCONTROL_FAILS:-}" = 1 ]; then
    echo "scontrol: error: Job is not requeueable" >&2; exit 1
fi
exit 0
"""
SRUN_LINE = ["srun", "--kill-on-bad-exit=1", "--nodes=1", "bash", "msrun.sh"]


def _run_dir(make_job, tmp_path, **keys) -> Path:
    spec = load_job(make_job(launcher="msrun", cards_per_node=2, **keys), check_paths=False)
    run_dir, _ = write_run_dir(spec, slurm=True, out=str(tmp_path / "runs"))
    return run_dir


def _env(tmp_path: Path, run_dir: Path, workers: str, **extra) -> dict:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL),
                       ("worker.py", FAKE_WORKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k != "PACKRUN_LOG_LEVEL"}
    return env | {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(REPO),
                  "RUN_DIR": str(run_dir), "FAKE_WORKERS": workers, "SLURM_JOB_ID": "99",
                  "SLURM_JOB_NODELIST": "vm", "MASTER_ADDR": "vm", "MASTER_PORT": "8118",
                  "FAKE_PYTHON": sys.executable, "FAKE_WORKER": str(bin_dir / "worker.py")} | extra


def batch(run_dir: Path, env: dict, usr1: bool = False, signal_to_send=None):
    """Run the batch program; (exit status, its output, scontrol's calls, seconds taken)."""
    out_path = run_dir.parent / "batch.out"
    started = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "launcher.node", "batch", str(run_dir),
                                 "--", *SRUN_LINE], env=env, cwd=run_dir, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if usr1 or signal_to_send:
            wait_for(lambda: (run_dir / "srun.started").exists(), 30, "the fake srun")
            proc.send_signal(signal_to_send or signal.SIGUSR1)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    calls = run_dir / "scontrol.calls"
    return (proc.returncode, out_path.read_text(),
            calls.read_text() if calls.exists() else "", time.monotonic() - started)


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / RUN_STATE).read_text())


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_completed(make_job, tmp_path):
    run_dir = _run_dir(make_job, tmp_path)
    rc, out, calls, _ = batch(run_dir, _env(tmp_path, run_dir, "complete"))
    assert rc == 0 and calls == "", out
    assert "packrun: job 99 (restart 0) on vm, scheduler vm:8118\n" in out
    assert "packrun: srun exited with status 0\n" in out
    assert (run_dir / "srun.args").read_text().split() == SRUN_LINE[1:]  # the srun line, as is
    assert (run_dir / "srun.attempt").read_text() == "1\n"  # PACKRUN_ATTEMPT for the workers
    assert (_state(run_dir)["state"], _state(run_dir)["attempt"]) == ("completed", 1)
    assert "job.sbatch (Slurm job 99)" in (run_dir / "run.lock").read_text()


@pytest.mark.parametrize("requeue", [True, False])
def test_stopped_on_request(make_job, tmp_path, requeue):
    run_dir = _run_dir(make_job, tmp_path, requeue=requeue)
    (run_dir / PREEMPT_FLAG).touch()                  # served by an earlier run of the job:
    (run_dir / worker_exit(1)).write_text("75\n")     # removed before the step starts
    rc, out, calls, took = batch(run_dir, _env(tmp_path, run_dir, "stop-on-request"), usr1=True)
    assert took < 30, out  # rank 0 stopped: srun's 60 s teardown is not waited for ...
    assert _gone(int((run_dir / "srun.pid").read_text())), "the step outlived the batch program"
    assert "packrun: SIGUSR1: asking the workers to stop after their current step\n" in out
    assert _state(run_dir)["state"] == "stopped"
    if requeue:
        assert rc == 0 and calls == "requeue 99\n", out
        assert "packrun: the workers stopped on request; requeueing job 99\n" in out
    else:
        assert rc == 75 and calls == "", out
        assert (f"packrun: the workers stopped on request; resume with: packrun run --resume "
                f"{run_dir}\n") in out
    assert "srun exited with status" not in out


def test_a_stalled_step_is_stopped_with_every_ranks_stacks_and_requeued(make_job, tmp_path):
    """The batch program's stall watchdog: no rank reports progress for stall_timeout (2 s):
    both ranks' stacks, failure.json naming rank 1 (a step behind rank 0), the step stopped and
    the job requeued like any failure."""
    run_dir = _run_dir(make_job, tmp_path, stall_timeout=2, startup_timeout=60)
    rc, out, calls, _ = batch(run_dir, _env(tmp_path, run_dir, "stall"))
    assert rc == 0 and calls == "requeue 99\n", out
    assert _gone(int((run_dir / "srun.pid").read_text())), "the step outlived the batch program"
    record = json.loads((run_dir / "failure.json").read_text())
    stall = record["stall"]
    assert (record["rank"], record["action"], stall["rank"], stall["bound"]) == \
        (1, "restarted", 1, "stall_timeout")
    assert stall["why"] == ("it is at training epoch 1 step 2/5, the others at training epoch 1 "
                            "step 3/5")
    for r in (0, 1):
        entry = stall["per_rank"][r]
        assert entry["answered"] and entry["top_frame"].endswith(" in stuck_for_good"), entry
        assert 'worker.py", line ' in (run_dir / "logs" / "attempt_1" / f"worker_{r}.stack"
                                       ).read_text()
    assert "packrun: stalled: no rank made progress for 2 s (stall_timeout 2 s); rank 1 " \
           "differs: it is at training epoch 1 step 2/5" in out
    assert ("packrun: attempt 1 failed: rank 1 on vm stalled: no rank made progress for 2 s "
            "(stall_timeout 2 s) at training epoch 1 step 2/5; restarting from last.ckpt "
            "(attempt 2 of 4)\n") in out
    assert "packrun: requeueing job 99 after a failure (attempt 2 of 4)\n" in out
    assert (_state(run_dir)["state"], _state(run_dir)["exit_code"]) == ("restarting", 124)


def test_a_stale_request_is_no_stop_on_request(make_job, tmp_path):
    """Without the signal this run, a failure is a failure (the earlier run's request and exit
    statuses are removed when the job starts)."""
    run_dir = _run_dir(make_job, tmp_path, max_restarts=0)
    (run_dir / PREEMPT_FLAG).touch()
    (run_dir / worker_exit(0)).write_text("75\n")
    rc, out, calls, _ = batch(run_dir, _env(tmp_path, run_dir, "rank1-fails"))
    assert rc == 1 and calls == "", out
    assert not (run_dir / PREEMPT_FLAG).exists()


def test_failed_and_requeued(make_job, tmp_path):
    run_dir = _run_dir(make_job, tmp_path)
    rc, out, calls, _ = batch(run_dir, _env(tmp_path, run_dir, "rank1-fails"))
    assert rc == 0 and calls == "requeue 99\n", out
    assert ("packrun: attempt 1 failed: rank 1 on vm exited with status 1; restarting from "
            "last.ckpt (attempt 2 of 4)\n") in out
    assert "packrun: srun exited with status 1\n" in out
    assert "packrun: requeueing job 99 after a failure (attempt 2 of 4)\n" in out
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["rank"], record["exit_code"], record["action"]) == (1, 1, "restarted")
    assert (_state(run_dir)["state"], _state(run_dir)["attempt"]) == ("restarting", 1)


def test_a_job_array_task_requeues_itself_not_the_array(make_job, tmp_path):
    """A task of `packrun sweep --slurm`'s array: its own job id may be the array's id, and
    `scontrol requeue ARRAY` requeues every task, finished ones too; ARRAY_TASK names it."""
    run_dir = _run_dir(make_job, tmp_path)
    rc, out, calls, _ = batch(run_dir, _env(tmp_path, run_dir, "rank1-fails", SLURM_JOB_ID="15",
                                            SLURM_ARRAY_JOB_ID="15", SLURM_ARRAY_TASK_ID="1"))
    assert rc == 0 and calls == "requeue 15_1\n", out
    assert "packrun: requeueing job 15 after a failure (attempt 2 of 4)\n" in out


def test_failed_and_given_up(make_job, tmp_path):
    run_dir = _run_dir(make_job, tmp_path)
    env = _env(tmp_path, run_dir, "rank1-fails", SLURM_RESTART_COUNT="3")
    rc, out, calls, _ = batch(run_dir, env)
    assert rc == 1 and calls == "", out
    assert "packrun: job 99 (restart 3) on vm" in out
    assert "packrun: attempt 4 failed: rank 1 on vm exited with status 1; giving up" in out
    assert "requeueing" not in out
    assert (_state(run_dir)["state"], _state(run_dir)["attempt"]) == ("failed", 4)


def test_failed_without_requeue_is_not_requeued(make_job, tmp_path):
    run_dir = _run_dir(make_job, tmp_path, requeue=False)
    rc, out, calls, _ = batch(run_dir, _env(tmp_path, run_dir, "rank1-fails"))
    assert rc == 1 and calls == "", out
    assert "giving up" in out


def test_a_teardown_crash_after_every_rank_finished_completes(make_job, tmp_path):
    run_dir = _run_dir(make_job, tmp_path)
    rc, out, calls, _ = batch(run_dir, _env(tmp_path, run_dir, "teardown-crash"))
    assert rc == 0 and calls == "", out
    assert ("packrun: warning: the launch exited with status 139 after every rank had "
            "finished with exit status 0") in out
    assert "srun exited with status" not in out and "failed" not in out
    assert _state(run_dir)["state"] == "completed"
    assert not (run_dir / "failure.json").exists()


def test_a_second_launch_is_refused(make_job, tmp_path):
    run_dir = _run_dir(make_job, tmp_path)
    (run_dir / PREEMPT_FLAG).touch()  # the holder's: a refused launch must not touch it
    with acquire(run_dir, "packrun run --resume"):
        rc, out, calls, _ = batch(run_dir, _env(tmp_path, run_dir, "complete"))
    assert rc == 2, out
    assert f"packrun: run directory {run_dir} is in use by packrun run --resume (pid " \
           f"{os.getpid()} on " in out
    assert not (run_dir / "srun.started").exists() and calls == ""
    assert (run_dir / PREEMPT_FLAG).exists() and not (run_dir / RUN_STATE).exists()


def test_a_failed_requeue_says_how_to_resume(make_job, tmp_path):
    run_dir = _run_dir(make_job, tmp_path)
    env = _env(tmp_path, run_dir, "stop-on-request", FAKE_SCONTROL_FAILS="1")
    rc, out, calls, _ = batch(run_dir, env, usr1=True)
    assert rc == 75 and calls == "requeue 99\n", out
    assert "Job is not requeueable" in out
    assert f"packrun: scontrol requeue failed; resume with: packrun run --resume {run_dir}\n" \
        in out


def test_sigterm_stops_the_step_and_ends_the_batch_by_it(make_job, tmp_path):
    """scancel, the time limit: the step is stopped, the attempt recorded as stopped, and the
    batch program ends by the signal, as the batch shell did."""
    run_dir = _run_dir(make_job, tmp_path)
    rc, out, calls, took = batch(run_dir, _env(tmp_path, run_dir, "stop-on-request"),
                                 signal_to_send=signal.SIGTERM)
    assert rc == -signal.SIGTERM and calls == "" and took < 30, out
    assert _gone(int((run_dir / "srun.pid").read_text()))
    assert _state(run_dir)["state"] == "stopped"


def test_the_rendered_job_sbatch_execs_the_batch_program(make_job, tmp_path):
    """job.sbatch's process becomes the batch program: it holds the lock under bash's pid, so
    the SIGUSR1 Slurm sends the batch shell (B:USR1) reaches it."""
    run_dir = _run_dir(make_job, tmp_path)
    env = _env(tmp_path, run_dir, "stop-on-request")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        env.pop(var)
    out_path = tmp_path / "sbatch.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(["bash", str(run_dir / "job.sbatch")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: (run_dir / "srun.started").exists(), 30, "the fake srun")
        assert f'"pid": {proc.pid},' in (run_dir / "run.lock").read_text()
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=60) == 0, out_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (run_dir / "scontrol.calls").read_text() == "requeue 99\n"
    assert "scheduler vm:" in out_path.read_text()
