"""Cluster launches as an Ascend/GPU engineer runs them, proven with stub workers and launchers
on PATH that record env, argv, cwd and affinity: a dead rank stops its peers in rank_table.sh,
core binding in every launch mode, existing rank tables, card subsets, per-rank directories,
HCCL's execution timeout, Slurm resources, a loopback master."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher import render
from launcher.errors import UserError
from launcher.render import render_artifacts, write_run_dir
from launcher.spec import load_job

pytestmark = pytest.mark.unit

ASCEND8 = dict(device="Ascend", cards_per_node=8)
DEVICE_IPS_2X8 = ",".join(f"192.168.{n}.{101 + i}" for n in (1, 2) for i in range(8))
RUN_DIR = "/runs/demo-20250101-000000"

# Records what the launch gave it, then fails (rank FAIL_RANK, after a moment) or waits.
STUB_WORKER = """import json, os, sys, time
rec = {k: os.environ.get(k) for k in ("RANK_ID", "DEVICE_ID", "RANK_SIZE", "RANK_TABLE_FILE",
       "ASCEND_PROCESS_LOG_PATH", "HCCL_EXEC_TIMEOUT", "STUB_TASKSET_CORES",
       "ASCEND_RT_VISIBLE_DEVICES")}
rec.update(pid=os.getpid(), cwd=os.getcwd(), argv=sys.argv,
           affinity=sorted(os.sched_getaffinity(0)))
out = os.path.join(os.environ["STUB_RECORDS"], "rank_%s.json" % os.environ["RANK_ID"])
with open(out, "w") as f:
    json.dump(rec, f)
if os.environ["RANK_ID"] == os.environ.get("FAIL_RANK"):
    time.sleep(1.0)
    sys.exit(3)
time.sleep(600)
"""
# taskset as a 192-core machine would run it: record the cores, run the command.
STUB_TASKSET = """#!/bin/bash
[ "$1" = -c ] || { echo "stub taskset: expected -c LIST" >&2; exit 64; }
export STUB_TASKSET_CORES="$2"
shift 2
exec "$@"
"""


def stub_repo(tmp_path: Path, worker: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "train.py").write_text(worker)
    (repo / "launcher").symlink_to(Path(render.REPO) / "launcher")
    return repo


def stub_bin(tmp_path: Path, **tools: str) -> Path:
    d = tmp_path / "stubbin"
    d.mkdir(exist_ok=True)
    for name, text in tools.items():
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    return d


def records(folder: Path) -> dict[int, dict]:
    return {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in folder.glob("*.json")}


# --- rank_table.sh: a dead rank stops its peers -------------------------------------------------

def test_a_dead_rank_stops_its_peers_and_each_rank_has_its_cores_and_directory(make_job,
                                                                               tmp_path):
    repo = stub_repo(tmp_path, STUB_WORKER)
    bin_dir = stub_bin(tmp_path, taskset=STUB_TASKSET)
    spec = load_job(make_job(**ASCEND8, launcher="rank_table", nodes=2, hosts="10.0.0.[1-2]",
                             device_ips=DEVICE_IPS_2X8))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=repo)
    rec = tmp_path / "records"
    rec.mkdir()
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PACKRUN_CORES": "0-191",
                        "STUB_RECORDS": str(rec), "FAIL_RANK": "11"}
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(run_dir / "rank_table.sh"), "1"], capture_output=True,
                         text=True, timeout=120, env=env)
    elapsed = time.monotonic() - t0
    assert res.returncode == 3, res.stdout + res.stderr
    assert (f"rank 11 exited with status 3; log: {run_dir}/logs/worker_11.log"
            in res.stderr), res.stderr
    got = records(rec)
    assert sorted(got) == list(range(8, 16))
    alive = [r for r, g in got.items() if psutil.pid_exists(g["pid"])
             and psutil.Process(g["pid"]).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"ranks {alive} still run after the script ended"
    assert elapsed < 60, f"the peers took {elapsed:.0f} s to stop"
    cores = {r: g["STUB_TASKSET_CORES"] for r, g in got.items()}
    assert cores == {8 + i: f"{24 * i}-{24 * i + 23}" for i in range(8)}  # 192 // 8, distinct
    assert {r: g["cwd"] for r, g in got.items()} == {r: str(run_dir / "ranks" / str(r))
                                                      for r in got}
    assert {r: g["DEVICE_ID"] for r, g in got.items()} == {8 + i: str(i) for i in range(8)}
    for r, g in got.items():
        assert g["ASCEND_PROCESS_LOG_PATH"] == str(run_dir / "logs" / "ascend" / f"rank_{r}")
        assert g["HCCL_EXEC_TIMEOUT"] == "1836" and g["RANK_SIZE"] == "16"
    for r in range(8, 16):
        assert f"packrun: rank {r} on device {r - 8}, cores {cores[r]}" in res.stdout


def test_the_real_taskset_binds_each_rank_to_its_own_core(make_job, tmp_path):
    """On this machine, for real: 2 ranks on the process's own cores, one core each."""
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        pytest.skip("needs 2 cores and taskset")
    repo = stub_repo(tmp_path, STUB_WORKER.replace("time.sleep(600)", "pass"))
    spec = load_job(make_job(device="Ascend", cards_per_node=2, launcher="rank_table",
                             hosts="10.0.0.1", device_ips="192.168.1.1,192.168.1.2"))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=repo)
    rec = tmp_path / "records"
    rec.mkdir()
    env = os.environ | {"STUB_RECORDS": str(rec), "PACKRUN_CORES": ""}
    res = subprocess.run(["taskset", "-c", "0,1", "bash", str(run_dir / "rank_table.sh")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    got = records(rec)
    assert [got[0]["affinity"], got[1]["affinity"]] == [[0], [1]]


def test_the_script_stops_every_rank_on_sigterm(make_job, tmp_path):
    repo = stub_repo(tmp_path, STUB_WORKER)
    spec = load_job(make_job(device="Ascend", cards_per_node=2, launcher="rank_table",
                             hosts="10.0.0.1", device_ips="192.168.1.1,192.168.1.2",
                             bind_cores=False))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=repo)
    rec = tmp_path / "records"
    rec.mkdir()
    proc = subprocess.Popen(["bash", str(run_dir / "rank_table.sh")], env=os.environ | {
        "STUB_RECORDS": str(rec)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(rec.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.terminate()
    assert proc.wait(timeout=60) == 143
    for g in records(rec).values():
        assert not psutil.pid_exists(g["pid"]) or \
            psutil.Process(g["pid"]).status() == psutil.STATUS_ZOMBIE
