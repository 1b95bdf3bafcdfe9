"""One launch at a time per run directory (launcher/core/rundir/lock.py, which the Slurm batch
program launcher/node/batch.py takes too): a second launch is refused with exit status 2 naming
the holder, and the lock dies with its holder."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.core.errors import UserError
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.rundir.lock import acquire
from launcher.core.rundir.names import PREEMPT_FLAG, RUN_LOCK
from launcher.core.spec import load_job
from launcher.render.artifacts import write_run_dir
from tests.helpers import packrun, pids_of, processes_of, wait_for

pytestmark = pytest.mark.unit

HOLD = ("import sys, time; from launcher.core.rundir.lock import acquire; "
        "lock = acquire(sys.argv[1], 'holder test'); print('held', flush=True); time.sleep(600)")


def run_dir_for(tmp_path: Path, make_job, **keys) -> Path:
    spec = load_job(make_job(**keys), check_paths=False)
    d = tmp_path / "rd"
    d.mkdir()
    (d / "logs").mkdir()
    (d / "job.json").write_text(spec_to_json(spec))
    return d


def holder_process(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    with acquire(tmp_path, "packrun run"):
        with pytest.raises(UserError) as e:
            acquire(tmp_path, "packrun debug --resume")
        msg = str(e.value)
        assert f"run directory {tmp_path} is in use by packrun run (pid {os.getpid()} on " \
               f"{socket.gethostname()}, started " in msg
    acquire(tmp_path, "again").release()  # released by the context manager


def test_lock_dies_with_its_holder(tmp_path):
    proc = holder_process(tmp_path)
    try:
        with pytest.raises(UserError, match=rf"in use by holder test \(pid {proc.pid} on "):
            acquire(tmp_path, "second")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    acquire(tmp_path, "after the holder died").release()
    info = json.loads((tmp_path / RUN_LOCK).read_text())
    assert info["command"] == "after the holder died" and info["pid"] == os.getpid()


def test_nodes_lock_their_own_share(tmp_path):
    with acquire(tmp_path, "node 0"), acquire(tmp_path, "node 1", node_rank=1):
        with pytest.raises(UserError, match=r"\(node 1\) is in use by node 1"):
            acquire(tmp_path, "again", node_rank=1)


def test_read_only_run_directory_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only directories")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(UserError, match="cannot lock run directory"):
            acquire(tmp_path, "x")
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize("args, files", [
    (["debug", "--resume={rd}"], []),
    (["run", "--resume={rd}"], ["msrun.sh"]),
    (["node-launch", "{rd}", "--node_rank=0", "--master_addr=127.0.0.1",
      "--master_port=8118"], ["msrun.sh", "job.sbatch"]),
])
def test_second_launch_of_a_busy_run_dir_exits_2(tmp_path, make_job, args, files):
    rd = run_dir_for(tmp_path, make_job)
    for f in files:
        (rd / f).write_text("#!/bin/bash\ntouch STARTED\n")
    (rd / PREEMPT_FLAG).touch()  # the holder's: a refused launch must not touch it
    proc = holder_process(rd)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        r = packrun(*(a.format(rd=rd) for a in args), env=env, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"is in use by holder test (pid {proc.pid} on {socket.gethostname()}" in r.stderr
    assert (rd / PREEMPT_FLAG).exists()
    assert not (rd / "STARTED").exists() and not (rd / "logs" / "worker_0.log").exists()


def _stub_srun(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir()
    path = bin_dir / "srun"
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_batch_script_holds_the_lock(tmp_path, make_job):
    """job.sbatch (also when Slurm requeues it) takes the same lock (launcher/node/batch.py):
    refused while another launch holds it; while it runs, `packrun run --resume` is refused
    naming the Slurm job."""
    spec = load_job(make_job(nodes=1, master_addr="127.0.0.1", master_port=8118),
                    check_paths=False)
    rd, _ = write_run_dir(spec, slurm=True, out=str(tmp_path / "runs"))
    bin_dir = tmp_path / "bin"
    _stub_srun(bin_dir, "echo srun-started; sleep 600\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="7",
               SLURM_JOB_NODELIST="localhost", SLURM_RESTART_COUNT="1")
    proc = holder_process(rd)
    try:
        r = subprocess.run(["bash", str(rd / "job.sbatch")], env=env, capture_output=True,
                           text=True, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert r.returncode == 2 and "srun-started" not in r.stdout
    assert f"is in use by holder test (pid {proc.pid} on " in r.stderr, r.stderr
    batch = subprocess.Popen(["bash", str(rd / "job.sbatch")], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "job.sbatch" not in (rd / RUN_LOCK).read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(UserError, match=r"in use by job.sbatch \(Slurm job 7\) \(pid "
                                            rf"{batch.pid} on "):
            acquire(rd, "packrun run --resume")
    finally:
        # as scancel ends a job: SIGTERM to the batch program, which stops its srun step (a
        # session of its own, which a SIGKILL of the batch would leave running)
        os.killpg(batch.pid, signal.SIGTERM)
        try:
            batch.wait(timeout=30)
        finally:
            for pid in pids_of(rd):
                os.kill(pid, signal.SIGKILL)
    assert batch.returncode == -signal.SIGTERM
    # its lifeline's watcher ends what is left (the srun step) and then itself, within seconds
    wait_for(lambda: processes_of(rd) == [], 30, "the batch program's processes to end")
    acquire(rd, "after the job").release()
