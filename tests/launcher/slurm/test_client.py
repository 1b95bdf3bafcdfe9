"""`packrun submit / status / cancel` (launcher/slurm/client.py).

The first part needs no cluster: Slurm's answers and failures come from fake commands on PATH
or a stubbed job_info, and job.sbatch's preemption logic runs under bash with a fake srun and
scontrol. The second part runs real jobs on the single-node cluster that
tests/cluster/slurm_up.sh starts (.ci/run does): resnet18 at 32 px on the digits fixture, 2 CPU
workers under msrun, inside sbatch. Without a cluster those tests skip, saying how to start one;
in CI (CI=true) they fail instead.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from launcher.core.errors import EXIT_UNAVAILABLE, UserError
from launcher.core.logtail import LogFollower
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.rundir.metrics import read_metrics
from launcher.core.rundir.names import PREEMPT_FLAG, SLURM_JOB_ID, worker_exit
from launcher.core.spec import load_job
from launcher.render.artifacts import write_run_dir
from launcher.slurm import client as slurm
from launcher.slurm.client import JobInfo
from tests.helpers import (
    REPO,
    TEST_STALL_S,
    attempt_shown,
    batch_step_succeeded,
    packrun,
    packrun_argv,
    packrun_env,
    packrun_in_process,
    processes_of,
    run_dir_of,
    shown,
    wait_for,
    write_tiny_job,
)


def fake_tools(tmp_path, **scripts) -> dict:
    """An environment whose PATH holds only the given fake commands ({name: shell body}), and
    no SLURM_CONF (whatever cluster this shell points at is not asked)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    return env | {"PATH": str(bin_dir)}


@pytest.fixture(scope="module")
def job_file(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("slurmjobs")
    return write_tiny_job(d / "tiny.toml", digits_2class, nodes=1, cards_per_node=2)


# =============================================================================================
# Without a cluster
# =============================================================================================

@pytest.mark.unit
@pytest.mark.parametrize("state, exit_code, sig, status", [
    ("COMPLETED", 0, 0, 0),
    ("FAILED", 1, 0, 1),
    ("FAILED", 75, 0, 75),
    ("CANCELLED", 0, 15, 143),   # scancel: the batch script ended by SIGTERM
    ("TIMEOUT", 0, 0, 1),        # never 0 unless COMPLETED
    ("NODE_FAIL", 0, 0, 1),
])
def test_exit_status_of_a_job(state, exit_code, sig, status):
    info = JobInfo("1", state, exit_code, sig, 0, "00:00:01", "vm", "")
    assert info.ended and info.status == status


@pytest.mark.unit
def test_job_info_reads_scontrol(tmp_path, monkeypatch):
    line = ("JobId=4 JobName=tiny UserId=root(0) JobState=RUNNING Reason=None Requeue=1 "
            "Restarts=1 BatchFlag=1 ExitCode=0:0 RunTime=00:00:52 AllocNode:Sid=localhost:1 "
            "NodeList=node[01-02] CPUs/Task=2 Command=/runs/x/job.sbatch Power=")
    monkeypatch.setenv("PATH", fake_tools(tmp_path, scontrol=f"echo '{line}'")["PATH"])
    monkeypatch.delenv("SLURM_CONF", raising=False)
    info = slurm.job_info("4")
    assert info == JobInfo("4", "RUNNING", 0, 0, 1, "00:00:52", "node[01-02]", "")
    assert not info.ended


@pytest.mark.unit
def test_a_job_slurmctld_forgot(tmp_path, monkeypatch, job_file):
    monkeypatch.setenv("PATH", fake_tools(
        tmp_path, scontrol="echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1",
        sacct="echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1")["PATH"])
    monkeypatch.delenv("SLURM_CONF", raising=False)
    with pytest.raises(slurm.UserError, match=r"Slurm does not know job 12: slurmctld forgets "
                                              r"finished jobs after MinJobAge"):
        slurm.job_info("12")
    # status still tells what the run directory knows
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "job.json").write_text(spec_to_json(load_job(job_file, {"epochs": 3})))
    (run_dir / SLURM_JOB_ID).write_text("12\n")
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.75}\n'
                                           '{"epoch": 2, "val_acc": 0.5}\n')
    assert slurm.status(run_dir).splitlines() == [
        ("job 12: ended; slurmctld forgets finished jobs after MinJobAge and sacct has no record "
         "of it (no accounting on this cluster?)"), "epoch 2/3, best acc so far 0.75 (epoch 1)"]


@pytest.mark.unit
def test_log_follower_prints_whole_lines_and_restarts_with_a_rewritten_log(tmp_path):
    log, console = tmp_path / "worker_0.log", io.StringIO()
    follower = LogFollower(log, console)
    follower.poll()                                  # no log yet: nothing
    log.write_bytes(b"Epoch 1/3\nstep 1")
    follower.poll()
    assert console.getvalue() == "Epoch 1/3\n"       # the partial line waits
    with open(log, "ab") as f:
        f.write(b" done\n")
    follower.poll()
    assert console.getvalue() == "Epoch 1/3\nstep 1 done\n"
    log.write_bytes(b"resuming\n")                   # a requeued run rewrote it
    follower.poll()
    assert console.getvalue().endswith(f"packrun: {log} started again\nresuming\n")


@pytest.mark.unit
def test_follow_stays_with_a_requeued_job_until_it_ends(tmp_path, monkeypatch):
    (tmp_path / SLURM_JOB_ID).write_text("7\n")
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "worker_0.log"
    polls = [("PENDING", 0, None), ("RUNNING", 0, "Epoch 1/3\nepoch time: 1 ms\n"),
             ("REQUEUED", 1, None), ("PENDING", 1, None), ("RUNNING", 1, "resuming\n"),
             ("COMPLETED", 1, "resuming\nEnd training\n")]

    def job_info(job_id):
        state, restarts, text = polls.pop(0)
        if text is not None:
            log.write_text(text)
        pending = state in ("PENDING", "REQUEUED")
        return JobInfo(job_id, state, 0, 0, restarts, "00:00:09", "" if pending else "vm", "")

    monkeypatch.setattr(slurm, "job_info", job_info)
    console = io.StringIO()
    assert slurm.follow(tmp_path, console, poll_s=0) == 0
    out = console.getvalue()
    assert not polls
    assert re.findall(r"^packrun: job 7 (.*)$", out, re.M) == [
        "PENDING", "RUNNING, elapsed 00:00:09, nodes vm",
        "REQUEUED, elapsed 00:00:09, requeued 1 time(s)", "PENDING, requeued 1 time(s)",
        "RUNNING, elapsed 00:00:09, nodes vm, requeued 1 time(s)",
        "COMPLETED, exit code 0, elapsed 00:00:09, requeued 1 time(s)"]
    assert out.count("Epoch 1/3") == 1 and "started again\nresuming\nEnd training\n" in out
    assert out.endswith("packrun: job 7 COMPLETED, exit code 0, elapsed 00:00:09, requeued 1 "
                        "time(s)\n")


@pytest.mark.unit
def test_follow_names_the_logs_and_shows_the_failing_one(tmp_path, monkeypatch):
    (tmp_path / SLURM_JOB_ID).write_text("8\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "slurm-8.out").write_text("packrun: srun exited with status 1\n")
    (tmp_path / "logs" / "worker_0.log").write_text("Epoch 1/3\n")  # killed by msrun: no error
    (tmp_path / "logs" / "worker_1.log").write_text(
        "".join(f"line {i}\n" for i in range(30))
        + "Traceback (most recent call last):\nValueError: bad batch\n")
    monkeypatch.setattr(slurm, "job_info",
                        lambda job_id: JobInfo(job_id, "FAILED", 1, 0, 0, "00:00:20", "vm", ""))
    console = io.StringIO()
    assert slurm.follow(tmp_path, console, poll_s=0) == 1
    out = console.getvalue()
    assert "packrun: job 8 FAILED, exit code 1, elapsed 00:00:20\n" in out
    for name in ("slurm-8.out", "logs/worker_0.log", "logs/worker_1.log"):
        assert f"  {tmp_path / name}\n" in out
    tail = out.split(f"packrun: last 20 lines of {tmp_path / 'logs' / 'worker_1.log'}:\n")[1]
    assert tail.splitlines()[-1] == "ValueError: bad batch" and len(tail.splitlines()) == 20


@pytest.mark.unit
def test_follow_rides_out_an_unreachable_slurmctld(tmp_path, monkeypatch):
    (tmp_path / SLURM_JOB_ID).write_text("9\n")
    answers = [slurm.SlurmUnreachable("down"), slurm.SlurmUnreachable("down"),
               JobInfo("9", "COMPLETED", 0, 0, 0, "00:00:01", "vm", "")]

    def job_info(job_id):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(slurm, "job_info", job_info)
    monkeypatch.setattr(slurm, "POLL_S", 0)
    assert slurm.follow(tmp_path, io.StringIO(), poll_s=0) == 0 and not answers

    def unknown(job_id):
        raise slurm.UserError(f"Slurm does not know job {job_id}")

    monkeypatch.setattr(slurm, "job_info", unknown)
    with pytest.raises(slurm.UserError, match="does not know"):  # not retried
        slurm.follow(tmp_path, io.StringIO(), poll_s=0)


# --- job.sbatch's preemption logic, run by bash with fake srun / scontrol --------------------

FAKE_SRUN = """
touch "$RUN_DIR/srun.started"
case "$FAKE_WORKERS" in
  stop-on-request)  # the workers stop at the request and exit 75: msrun reports 1, after
                    # its scheduler has waited for the workers it killed
    for _ in $(seq 200); do [ -e "$RUN_DIR/preempt.requested" ] && break; sleep 0.05; done
    echo 75 > "$RUN_DIR/logs/worker_0.exit"; sleep "$TEARDOWN_S"; exit 1 ;;
  fail) exit 1 ;;
  rank1-fails)  # rank 1 raises (exit 1); msrun kills rank 0, which leaves no exit status
    echo 1 > "$RUN_DIR/logs/worker_1.exit"; exit 1 ;;
  rank1-fails-alone)  # rank 1 raises; msrun goes on until its scheduler stops hearing from it
    echo 1 > "$RUN_DIR/logs/worker_1.exit"; sleep "$TEARDOWN_S"; exit 1 ;;
  rank1-killed-alone)  # msrun says that SIGKILL ended rank 1 (pid 4242), and goes on as above
    echo 4242 > "$RUN_DIR/logs/worker_1.pid"; echo 4141 > "$RUN_DIR/logs/worker_0.pid"
    echo "[ERROR] ME(1:2,MainProcess):2026-12-07-01:06:37.938.000 [mindspore/parallel/cluster/\
process_entity/_api.py:365] Worker process 4242 exit with exception. Error code: -9." \
      > "$RUN_DIR/logs/msrun-node0.out"
    sleep "$TEARDOWN_S"; exit 1 ;;
esac
"""


def run_batch_script(job_file, tmp_path, workers: str, *, requeue=True, send_usr1=True,
                     stale=False, teardown_s=0, overrides=None, restart_count=None):
    """Run job.sbatch under bash as Slurm would; (exit status, output, scontrol calls)."""
    run_dir, _ = write_run_dir(load_job(job_file, {"requeue": requeue} | (overrides or {})),
                               slurm=True, out=str(tmp_path / "runs"))
    if stale:  # left by an earlier run of the job
        (run_dir / PREEMPT_FLAG).touch()
        (run_dir / worker_exit(1)).write_text("75\n")
    calls = tmp_path / "scontrol.calls"
    env = fake_tools(tmp_path, srun=FAKE_SRUN,
                     scontrol=f'[ "$1" = show ] && echo vm && exit; echo "$@" >> {calls}')
    env.update(PATH=env["PATH"] + ":/usr/bin:/bin", RUN_DIR=str(run_dir), FAKE_WORKERS=workers,
               TEARDOWN_S=str(teardown_s), SLURM_JOB_ID="99", SLURM_JOB_NODELIST="vm")
    if restart_count is not None:
        env["SLURM_RESTART_COUNT"] = str(restart_count)
    out = tmp_path / "batch.out"  # a file, not a pipe: a fake srun in its teardown holds it
    with open(out, "w") as console:
        proc = subprocess.Popen(["bash", str(run_dir / "job.sbatch")], env=env,
                                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if send_usr1:
            wait_for(lambda: (run_dir / "srun.started").exists(), 30, "the fake srun")
            proc.send_signal(signal.SIGUSR1)
        proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a fake srun still in its teardown
        except ProcessLookupError:
            pass
    return proc.returncode, out.read_text(), calls.read_text() if calls.exists() else ""


@pytest.mark.unit
def test_the_batch_script_requeues_a_job_whose_workers_stopped_on_request(job_file, tmp_path):
    started = time.monotonic()
    rc, out, calls = run_batch_script(job_file, tmp_path, "stop-on-request", teardown_s=60)
    assert time.monotonic() - started < 20  # rank 0 stopped: msrun's teardown is not waited for
    assert rc == 0, out
    assert "packrun: SIGUSR1: asking the workers to stop after their current step" in out
    assert "packrun: the workers stopped on request; requeueing job 99" in out
    assert calls == "requeue 99\n"


@pytest.mark.unit
def test_the_batch_script_without_requeue_ends_with_status_75(job_file, tmp_path):
    rc, out, calls = run_batch_script(job_file, tmp_path, "stop-on-request", requeue=False)
    assert rc == 75 and calls == "", out
    assert "resume with: packrun run --resume " in out


@pytest.mark.unit
def test_a_failure_is_not_taken_for_a_stop_on_request(job_file, tmp_path):
    # a request and exit statuses from an earlier run are removed when the job starts
    rc, out, calls = run_batch_script(job_file, tmp_path, "fail", send_usr1=False, stale=True,
                                      overrides={"max_restarts": 0})
    assert rc == 1 and calls == "", out
    assert "packrun: srun exited with status 1" in out
    assert "packrun: attempt 1 failed: the launch on vm exited with status 1; giving up" in out


@pytest.mark.unit
def test_a_failed_step_requeues_the_job_while_restarts_are_left(job_file, tmp_path):
    rc, out, calls = run_batch_script(job_file, tmp_path, "rank1-fails", send_usr1=False)
    assert rc == 0 and calls == "requeue 99\n", out
    assert re.search(r"^packrun: attempt 1 failed: rank 1 on vm exited with status 1; "
                     r"restarting from last.ckpt \(attempt 2 of 4\)$", out, re.M), out
    assert "packrun: requeueing job 99 after a failure (attempt 2 of 4)" in out
    run_dir = run_dir_of(f"packrun: run directory {next((tmp_path / 'runs').iterdir())}")
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["rank"], record["exit_code"], record["action"]) == (1, 1, "restarted"), \
        attempt_shown(run_dir, 1, out)
    assert (run_dir / "logs" / "attempt_1" / "worker_1.exit").is_file()
    state = json.loads((run_dir / "run_state.json").read_text())
    assert (state["kind"], state["attempt"], state["state"]) == ("slurm", 1, "restarting")


@pytest.mark.unit
@pytest.mark.parametrize("workers, how", [("rank1-fails-alone", "exited with status 1"),
                                          ("rank1-killed-alone", "was killed by signal 9")])
def test_a_rank_that_fails_ends_the_step_at_once(job_file, tmp_path, workers, how):
    """A rank's failing exit status, or msrun's word that a signal killed it, fails the attempt:
    the batch program stops the srun step then, not when msrun's scheduler has stopped hearing
    from that rank (half a minute on), and names that rank."""
    started = time.monotonic()
    rc, out, calls = run_batch_script(job_file, tmp_path, workers, send_usr1=False,
                                      teardown_s=60, overrides={"max_restarts": 0})
    assert time.monotonic() - started < 20, out
    assert rc not in (0, 75) and calls == "", out
    assert f"packrun: rank 1 {how}; stopped the srun step" in out
    assert re.search(rf"^packrun: attempt 1 failed: rank 1 on vm {how}( \(SIGKILL\))?; "
                     r"giving up", out, re.M), out


@pytest.mark.unit
def test_the_last_allowed_attempt_is_not_requeued(job_file, tmp_path):
    rc, out, calls = run_batch_script(job_file, tmp_path, "rank1-fails", send_usr1=False,
                                      restart_count=3)
    assert rc == 1 and calls == "", out
    assert "packrun: attempt 4 failed: rank 1 on vm exited with status 1; giving up" in out


@pytest.mark.unit
def test_submit_without_sbatch_says_which_tool_is_missing(tmp_path, job_file):
    r = packrun_in_process("submit", job_file, f"--out={tmp_path / 'runs'}",
                           env=fake_tools(tmp_path))
    assert r.returncode == 2, shown(r)
    # the preflight (launcher/preflight/checks.py) finds it before anything is rendered
    assert re.search(r"^packrun: error: sbatch not found on PATH; run packrun submit on a Slurm "
                     r"login node", r.stderr, re.M), shown(r)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert "Traceback" not in r.stderr


@pytest.mark.unit
def test_submit_records_the_job_id_and_passes_the_worker_environment(tmp_path, job_file):
    seen = tmp_path / "sbatch.seen"
    env = fake_tools(tmp_path, sbatch=f'echo "$* | $PYTHONUNBUFFERED $PACKRUN_CONSOLE_TTY '
                                      f'$PYTHONPATH" > {seen}; echo "4321;cluster"')
    r = packrun_in_process("submit", job_file, f"--out={tmp_path / 'runs'}", env=env)
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    assert (run_dir / SLURM_JOB_ID).read_text() == "4321\n"
    assert f"packrun: submitted Slurm job 4321 (1 node(s) x 2 worker(s)); packrun status " \
           f"{run_dir}" in r.stdout
    args, env_seen = seen.read_text().split(" | ")
    assert args == f"--parsable --open-mode=append {run_dir / 'job.sbatch'}"
    assert env_seen.split()[:2] == ["1", "0"] and str(REPO) in env_seen  # unbuffered, no tty


@pytest.mark.unit
@pytest.mark.parametrize("stderr, hint", [
    ("sbatch: error: Batch job submission failed: Invalid partition name specified", False),
    (("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect "
      "failure)"), True),
])
def test_a_failing_sbatch_is_named_with_its_error(tmp_path, job_file, stderr, hint):
    env = fake_tools(tmp_path, sbatch=f"echo '{stderr}' >&2; exit 1")
    r = packrun_in_process("submit", job_file, "--partition=nope", f"--out={tmp_path / 'runs'}",
                           env=env)
    # a refusal is bad input (2, never retried), no answer an outage (69, EX_UNAVAILABLE)
    assert r.returncode == (EXIT_UNAVAILABLE if hint else 2), shown(r)
    assert "packrun: error: sbatch failed (exit 1) running `sbatch --parsable " in r.stderr
    assert f"job.sbatch`: {stderr}" in r.stderr
    assert ("is SLURM_CONF set and slurmctld running?" in r.stderr) == hint, r.stderr


@pytest.mark.unit
def test_status_and_cancel_need_a_submitted_run_directory(tmp_path):
    r = packrun_in_process("status", tmp_path)   # status also serves local runs: it needs job.json
    assert r.returncode == 2
    assert f"packrun: error: {tmp_path} is not a run directory (no job.json)" in r.stderr
    r = packrun_in_process("cancel", tmp_path)
    assert r.returncode == 2
    assert f"packrun: error: {tmp_path / SLURM_JOB_ID} not found: {tmp_path} was not submitted " \
           "with `packrun submit`" in r.stderr
    r = packrun_in_process("cancel", tmp_path / "nowhere")
    assert r.returncode == 2 and "run directory" in r.stderr and "not found" in r.stderr


@pytest.mark.unit
def test_a_missing_slurm_conf_is_named_at_once(tmp_path):
    (tmp_path / SLURM_JOB_ID).write_text("3\n")
    missing = tmp_path / "missing.conf"
    r = packrun_in_process("status", tmp_path, env=dict(os.environ, SLURM_CONF=str(missing)))
    assert r.returncode == 2, shown(r)
    assert f"packrun: error: SLURM_CONF is {missing}, which is not a file: point it at the " \
           "cluster's slurm.conf" in r.stderr


# =============================================================================================
# On a real cluster
# =============================================================================================

@pytest.fixture
def cleanup(cluster, job_file):
    """Leaves nothing running: kills the test's `packrun submit --wait` processes and cancels
    every job submitted from job_file's output directory."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    runs = job_file.parent / "runs"
    ids = [f.read_text().strip() for f in runs.glob(f"*/{SLURM_JOB_ID}")]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
        wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"],
                                            capture_output=True, text=True).stdout.strip(),
                 60, "jobs to leave the queue")


@pytest.mark.cluster("slurm")
def test_submit_wait_runs_two_workers_to_completion(cleanup, job_file):
    r = packrun("submit", job_file, "--wait")
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    job_id = (run_dir / SLURM_JOB_ID).read_text().strip()
    assert f"packrun: submitted Slurm job {job_id} (1 node(s) x 2 worker(s))" in r.stdout
    assert "End training, the best acc is: " in r.stdout      # rank 0's log, streamed
    assert f"packrun: job {job_id} COMPLETED, exit code 0" in r.stdout
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]
    assert (run_dir / "best.ckpt").is_file()
    for rank in (0, 1):
        assert (run_dir / worker_exit(rank)).read_text().strip() == "0"
    batch = (run_dir / f"slurm-{job_id}.out").read_text()
    assert batch_step_succeeded(batch), batch[-2000:]
    s = packrun("status", run_dir)
    assert s.returncode == 0, shown(s)
    assert s.stdout.startswith(f"job {job_id}: COMPLETED, elapsed ")
    assert "epoch 1/1, best acc so far " in s.stdout


@pytest.mark.cluster("slurm")
def test_a_failing_worker_fails_the_job_and_names_the_log(cleanup, job_file):
    r = packrun("submit", job_file, "--wait", "--head=fc")  # no such cell: the workers fail
    assert r.returncode not in (0, 2), shown(r)             # the job's status, not a usage error
    run_dir = run_dir_of(r.stdout)
    job_id = (run_dir / SLURM_JOB_ID).read_text().strip()
    assert f"packrun: job {job_id} FAILED, exit code {r.returncode}" in r.stdout
    assert f"  {run_dir / 'logs' / 'worker_0.log'}\n" in r.stdout
    tail = re.split(r"packrun: last \d+ lines of \S+/logs/worker_\d\.log:\n", r.stdout)
    assert len(tail) == 2, shown(r)
    assert re.search(r"^packrun: error: .*'head'", tail[1], re.M), shown(r)


@pytest.mark.cluster("slurm")
def test_status_and_cancel_of_a_running_job(cleanup, job_file):
    r = packrun("submit", job_file, "--epochs=3")
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    job_id = (run_dir / SLURM_JOB_ID).read_text().strip()
    wait_for(lambda: any("train.py" in p for p in processes_of(run_dir)), 60, "the workers")
    s = packrun("status", run_dir).stdout
    assert re.match(rf"job {job_id}: RUNNING, elapsed \d\d:\d\d:\d\d, nodes \S+\n", s), s
    assert "no epoch finished yet (of 3)" in s
    c = packrun("cancel", run_dir)
    assert c.returncode == 0 and f"packrun: cancelled job {job_id} (it was RUNNING)" in c.stdout
    wait_for(lambda: packrun("status", run_dir).stdout.startswith(f"job {job_id}: CANCELLED"),
             30, "CANCELLED")
    assert f"packrun: job {job_id} already ended: CANCELLED" in packrun("cancel", run_dir).stdout
    wait_for(lambda: not processes_of(run_dir), 30, f"no process left in {run_dir}")


@pytest.mark.cluster("slurm")
def test_warning_signal_requeues_and_the_job_resumes_from_the_saved_epoch(cleanup, job_file,
                                                                          tmp_path):
    out = tmp_path / "submit.out"
    with open(out, "w") as console:
        proc = subprocess.Popen(packrun_argv("submit", job_file, "--wait", "--epochs=3"),
                                cwd=REPO, env=packrun_env(), stdout=console,
                                stderr=subprocess.STDOUT, text=True)
    cleanup.append(proc)
    wait_for(lambda: "packrun: submitted Slurm job" in out.read_text(), 120, "the submission")
    run_dir = run_dir_of(out.read_text())
    job_id = (run_dir / SLURM_JOB_ID).read_text().strip()
    wait_for(lambda: read_metrics(run_dir), 240, "the first epoch")
    # what Slurm sends signal_before_s before the time limit (#SBATCH --signal=B:USR1@120)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=60)
    rc = proc.wait(timeout=400)
    text = out.read_text()
    assert rc == 0, text[-5000:]
    batch = (run_dir / f"slurm-{job_id}.out").read_text()
    assert "packrun: SIGUSR1: asking the workers to stop" in batch
    assert f"packrun: the workers stopped on request; requeueing job {job_id}" in batch
    assert f"packrun: job {job_id} (restart 1) on " in batch
    assert "resuming from " in text
    assert f"packrun: job {job_id} COMPLETED, exit code 0" in text and "requeued 1 time(s)" in text
    rows = read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2, 3]        # the full history, once
    assert rows[-1]["best_acc"] == max(row["val_acc"] for row in rows)
    assert (run_dir / "best.ckpt").is_file() and not (run_dir / PREEMPT_FLAG).exists()


@pytest.mark.cluster("slurm")
def test_a_killed_worker_requeues_the_job_and_it_completes(cleanup, job_file):
    # rank 1 SIGKILLs itself in epoch 2 of the first attempt (test-only fault injection)
    env = dict(os.environ, PACKRUN_TEST_FAULT="kill:rank=1:epoch=2:step=1")
    r = packrun("submit", job_file, "--wait", "--epochs=2", "--max_restarts=1", env=env,
                timeout=900)
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    job_id = (run_dir / SLURM_JOB_ID).read_text().strip()
    assert re.search(r"^packrun: attempt 1 failed: rank 1 on \S+ was killed by signal 9 "
                     r"\(SIGKILL\); restarting from last.ckpt \(attempt 2 of 2\)$", r.stdout,
                     re.M), shown(r)
    assert "packrun: attempt 2 of 2\n" in r.stdout
    assert f"packrun: job {job_id} COMPLETED, exit code 0" in r.stdout
    assert "requeued 1 time(s)" in r.stdout
    batch = (run_dir / f"slurm-{job_id}.out").read_text()
    assert f"packrun: requeueing job {job_id} after a failure (attempt 2 of 2)" in batch
    assert f"packrun: job {job_id} (restart 1) on " in batch
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]   # epoch 1 not rerun
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["rank"], record["signal"], record["action"]) == (1, 9, "restarted"), \
        attempt_shown(run_dir, 1, r)
    assert "PACKRUN_TEST_FAULT: kill" in \
        (run_dir / "logs" / "attempt_1" / "worker_1.log").read_text()
    s = packrun("status", run_dir)
    assert "run completed, attempt 2 of 2, at epoch 2" in s.stdout, shown(s)


@pytest.mark.cluster("slurm")
def test_slurm_environment_inside_a_real_job(cluster, tmp_path):
    out = tmp_path / "env.out"
    script = tmp_path / "env.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --ntasks=2 --output={out}\n"
        f"PYTHONPATH={REPO} srun {sys.executable} -c 'from launcher.slurm.env import "
        "SlurmEnvironment as S; e = S(); print(e.job_id, e.global_rank, e.local_rank, "
        "e.world_size, e.node_rank, e.num_nodes, e.master_addr, \",\".join(e.hosts))'\n")
    job_id = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True,
                            text=True, check=True, timeout=60).stdout.strip()
    try:
        wait_for(lambda: slurm.job_info(job_id).ended, 60, f"job {job_id}")
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
    info = slurm.job_info(job_id)
    assert info.state == "COMPLETED", out.read_text()
    rows = sorted(line.split() for line in out.read_text().splitlines())
    assert rows == [[job_id, "0", "0", "2", "0", "1", info.nodes, info.nodes],
                    [job_id, "1", "1", "2", "0", "1", info.nodes, info.nodes]]


@pytest.mark.unit
def test_an_unreachable_controller_is_an_outage_not_bad_input(tmp_path, job_file):
    """SlurmUnreachable is no UserError: `packrun status` of a submitted run exits 69
    (EX_UNAVAILABLE), which restart logic retries, not 2 (bad input, never retried); the batch
    program's requeue outage is said, not taken for a refusal."""
    assert not issubclass(slurm.SlurmUnreachable, UserError)
    rd, _ = write_run_dir(load_job(job_file), slurm=True, out=str(tmp_path / "runs"))
    (rd / SLURM_JOB_ID).write_text("77\n")
    down = ("echo 'slurm_load_jobs error: Unable to contact slurm controller (connect "
            "failure)' >&2; exit 1")
    env = fake_tools(tmp_path, scontrol=down, squeue=down, sacct=down)
    r = packrun_in_process("status", rd, env=env)
    assert r.returncode == EXIT_UNAVAILABLE, shown(r)
    assert "Unable to contact slurm controller" in r.stderr and "Traceback" not in r.stderr
    from launcher.core.rundir.attempts import Result, retryable
    assert retryable(Result(EXIT_UNAVAILABLE)) and not retryable(Result(2))


@pytest.mark.cluster("slurm")
def test_a_rank_hanging_in_its_data_loader_is_found_by_the_batch_program_and_requeued(cleanup,
                                                                                     job_file):
    """The batch program's stall watchdog on a real Slurm job: rank 1 blocks for good fetching
    epoch 2's first batch; after stall_timeout its stacks name the hang, the step is stopped and
    the job requeued, and the restart completes."""
    env = dict(os.environ, PACKRUN_TEST_FAULT="hang:rank=1:epoch=2:step=1")
    r = packrun("submit", job_file, "--wait", "--epochs=2", "--max_restarts=1",
                f"--stall_timeout={TEST_STALL_S}", env=env, timeout=900)
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    job_id = (run_dir / SLURM_JOB_ID).read_text().strip()
    batch = (run_dir / f"slurm-{job_id}.out").read_text()
    assert "packrun: stalled: no rank made progress for " in batch, batch[-3000:]
    assert f"packrun: requeueing job {job_id} after a failure (attempt 2 of 2)" in batch
    assert f"packrun: job {job_id} COMPLETED, exit code 0" in r.stdout
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["rank"], record["action"], record["stall"]["rank"]) == (1, "restarted", 1), \
        attempt_shown(run_dir, 1, r)
    top = record["stall"]["per_rank"][1]["top_frame"]
    assert top.endswith(" in hang_in_data_loader"), record["stall"]
    assert "hang_in_data_loader" in \
        (run_dir / "logs" / "attempt_1" / "worker_1.stack").read_text()
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]
