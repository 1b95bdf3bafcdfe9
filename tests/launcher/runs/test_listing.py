"""`packrun ls [DIR]` (launcher/runs/listing.py): every run and sweep directory under DIR with its
state, newest first; Slurm states from ONE squeue call.

The unit tests lay out run directories as the runs leave them (job.json, metrics.jsonl,
logs/worker_<rank>.exit, slurm_job_id) with a fake squeue on PATH that counts its calls; the
e2e test lists real runs: a completed one, a failed one, one still running in the background
and a sweep.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.core.rundir.job_json import spec_to_json
from launcher.core.spec import build_spec
from launcher.runs.listing import scan
from tests.helpers import (
    REPO,
    packrun,
    packrun_argv,
    packrun_env,
    packrun_in_process,
    write_tiny_job,
)


def make_run(root: Path, name: str, *, age_s: float, world=1, epochs=3, metrics=(),
             exits=None, launch=None, job_id=None, log=True) -> Path:
    d = root / name
    (d / "logs").mkdir(parents=True)
    spec = build_spec({"name": name.split("-")[0].replace("=", "_"), "train_dir": str(root),
                       "val_dir": str(root), "epochs": epochs, "cards_per_node": world},
                      check_paths=False)
    (d / "job.json").write_text(spec_to_json(spec))
    for e, acc in enumerate(metrics, start=1):
        with open(d / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": e, "val_acc": acc, "train_loss": 0.5}) + "\n")
    for rank, code in (exits or {}).items():
        (d / "logs" / f"worker_{rank}.exit").write_text(f"{code}\n")
    if log:
        (d / "logs" / "worker_0.log").write_text("Epoch 1/3\n")
    if launch:
        (d / launch).write_text("#!/bin/bash\n")
    if job_id:
        (d / "slurm_job_id").write_text(f"{job_id}\n")
    t = time.time() - age_s
    os.utime(d / "job.json", (t, t))
    return d


@pytest.fixture
def fake_squeue(tmp_path, monkeypatch):
    """squeue printing the given lines (%A|%F|%K|%T) and counting its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "squeue.calls"
    queue = tmp_path / "squeue.out"
    queue.write_text("")
    (bin_dir / "squeue").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\ncat {queue}\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return queue, calls


@pytest.mark.unit
def test_each_state_comes_from_the_run_directory_and_one_squeue_call(tmp_path, fake_squeue):
    queue, calls = fake_squeue
    root = tmp_path / "runs"
    make_run(root, "done-1", age_s=900, metrics=[0.5, 0.75, 0.7], exits={0: 0})
    make_run(root, "broke-1", age_s=800, world=2, launch="msrun.sh", metrics=[0.5],
             exits={0: 0, 1: 1})
    make_run(root, "paused-1", age_s=700, metrics=[0.6], exits={0: 75})
    make_run(root, "killed-1", age_s=600, metrics=[0.6])
    make_run(root, "rendered-1", age_s=500, launch="msrun.sh", log=False)
    make_run(root, "slurmrun-1", age_s=400, launch="job.sbatch", job_id=101, metrics=[0.9])
    make_run(root, "slurmreq-1", age_s=300, launch="job.sbatch", job_id=102, metrics=[0.4])
    make_run(root, "slurmpend-1", age_s=200, launch="job.sbatch", job_id=103, log=False)
    live = make_run(root, "live-1", age_s=100)
    sweep = root / "sw-sweep-1"
    # task 0 ran as job 200, the array's own id (Slurm gives it to one task), and ended
    make_run(sweep, "lr=0.1", age_s=50, launch="job.sbatch", job_id=200, metrics=[0.8, 0.9],
             exits={0: 0})
    make_run(sweep, "lr=0.2", age_s=50, launch="job.sbatch", log=False)
    (sweep / "sweep.json").write_text(json.dumps({"format": 1, "keys": ["lr"], "points": [
        {"index": 0, "dir": "lr=0.1"}, {"index": 1, "dir": "lr=0.2"}]}))
    (sweep / "slurm_job_id").write_text("200\n")
    (root / "not-a-run").mkdir()
    make_run(root / "demo", "nested-1", age_s=1000, metrics=[0.5], exits={0: 0}, epochs=1)
    queue.write_text("101|101|N/A|RUNNING\n102|102|N/A|PENDING\n103|103|N/A|PENDING\n"
                     "201|200|1|PENDING\n999|999|N/A|RUNNING\n")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(live)])
    try:
        states = {st.name: st for st in scan(root)}
    finally:
        proc.kill()
        proc.wait()
    assert calls.read_text().count("\n") == 1          # one squeue for every Slurm run
    got = {n: (st.kind, st.state.listed) for n, st in states.items()}  # as ls prints them
    assert got == {
        "done-1": ("debug", "completed"), "broke-1": ("run", "failed"),
        "paused-1": ("debug", "stopped"), "killed-1": ("debug", "failed"),
        "rendered-1": ("run", "rendered"), "slurmrun-1": ("Slurm", "running"),
        "slurmreq-1": ("Slurm", "requeued"), "slurmpend-1": ("Slurm", "pending"),
        "live-1": ("debug", "running"), "sw-sweep-1": ("sweep (2 points)", "pending"),
        "demo/nested-1": ("debug", "completed")}   # in a plain folder: found, named by its path
    assert states["broke-1"].detail == "rank 1 exited with status 1"
    assert states["broke-1"].world == 2
    assert "killed" in states["killed-1"].detail
    done = states["done-1"]
    assert (done.epoch, done.epochs, done.best_acc, done.best_epoch, done.last_acc) == \
        (3, 3, 0.75, 2, 0.7)
    sw = states["sw-sweep-1"]
    assert [p.state for p in sw.points] == ["completed", "pending"] and sw.best_acc == 0.9
    # newest first
    assert list(states) == ["sw-sweep-1", "live-1", "slurmpend-1", "slurmreq-1", "slurmrun-1",
                            "rendered-1", "killed-1", "paused-1", "broke-1", "done-1",
                            "demo/nested-1"]


@pytest.mark.unit
def test_ls_prints_a_table_and_names_a_missing_directory(tmp_path, fake_squeue):
    root = tmp_path / "runs"
    make_run(root, "done-1", age_s=60, metrics=[0.5, 0.75], epochs=2, exits={0: 0})
    r = packrun_in_process("ls", root, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == ["name", "kind", "state", "epoch", "best", "acc", "world", "start",
                              "duration"]
    assert row.split()[:6] == ["done-1", "debug", "completed", "2/2", "0.7500", "1"]
    r = packrun_in_process("ls", tmp_path / "nope")
    assert r.returncode == 2 and r.stderr.startswith("packrun: error: ") and "does not exist" \
        in r.stderr


@pytest.mark.e2e
def test_ls_over_real_runs_completed_failed_running_and_a_sweep(tmp_path, digits_2class):
    runs = tmp_path / "runs"
    job = write_tiny_job(tmp_path / "tiny.toml", digits_2class)  # runs to `runs`
    assert packrun("debug", job, "--name=good").returncode == 0
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    bad = packrun("debug", job, "--name=bad", f"--pretrained={garbage}")
    assert bad.returncode != 0 and "run directory" in bad.stdout, bad.stdout[-2000:]
    sw = packrun("sweep", job, "--grid", "seed=1,2", timeout=900)
    assert sw.returncode == 0, sw.stdout[-2000:] + sw.stderr[-2000:]
    background = subprocess.Popen(
        packrun_argv("debug", job, "--name=slow", "--epochs=50"), cwd=REPO, env=packrun_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(runs.glob("slow-*/logs/worker_0.log")):
            assert time.monotonic() < deadline and background.poll() is None
            time.sleep(0.5)
        r = packrun("ls", runs)
        assert background.poll() is None
    finally:
        os.killpg(background.pid, signal.SIGTERM)
        background.wait(timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0].split("-")[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["slow"][1:3] == ["debug", "running"]
    assert rows["good"][1:3] == ["debug", "completed"] and rows["good"][3] == "1/1"
    assert rows["bad"][1:3] == ["debug", "failed"]
    assert rows["tiny"][1:5] == ["sweep", "(2", "points)", "completed"]
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert names[0].startswith("slow-")     # newest first
