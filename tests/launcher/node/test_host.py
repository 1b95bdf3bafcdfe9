"""The node program of a launch over ssh (`python -m launcher.node host-run RUN_DIR NODE
ATTEMPT`), on this machine with a stand-in launch script whose "worker" runs in a session of its
own (as msrun's do): the node ends with its session (end of stdin), reports a failed rank,
and `stop-node` stops what it recorded."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from launcher.core.rundir import nodes
from launcher.core.rundir.names import node_state
from launcher.core.spec import load_job
from launcher.render.artifacts import write_run_dir
from tests.helpers import REPO, wait_for

pytestmark = pytest.mark.unit

STUB_MSRUN = """#!/bin/bash
cd "$(dirname "$0")"
if [ "${STUB:-}" = early ]; then echo "node check failed" >&2; exit 2; fi
setsid sleep 600 &
echo $! > logs/worker_1.pid
if [ "${STUB:-}" = fail ]; then sleep 0.5; echo 3 > logs/worker_1.exit; exit 1; fi
# msrun goes on after a rank's end until its scheduler stops hearing from it
if [ "${STUB:-}" = fail-alone ]; then sleep 0.5; echo 3 > logs/worker_1.exit; sleep 60; fi
if [ "${STUB:-}" = killed-alone ]; then
    sleep 0.5; kill -9 $!
    echo "[ERROR] ME(1:2,MainProcess):2026-12-07-01:06:37.938.000 [mindspore/parallel/cluster/\
process_entity/_api.py:365] Worker process $! exit with exception. Error code: -9."
    sleep 60
fi
wait
"""


@pytest.fixture
def run_dir(make_job):
    spec = load_job(make_job(nodes=2, hosts="a,b", master_port=8118))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=REPO)
    (run_dir / "msrun.sh").write_text(STUB_MSRUN)
    nodes.write_plan(run_dir, ["a", "b"], ["10.0.0.1", "10.0.0.2"], [], False)
    return run_dir


def host_run(run_dir, stdin=subprocess.PIPE, **env):
    return subprocess.Popen([sys.executable, "-m", "launcher.node", "host-run", str(run_dir), "1",
                             "1"], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, env=os.environ | env)


def worker(run_dir) -> int:
    pid = wait_for(lambda: (run_dir / "logs/worker_1.pid").exists()
                   and (run_dir / "logs/worker_1.pid").read_text().strip(), 30, "the worker")
    return int(pid)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def state(run_dir) -> dict:
    return json.loads((run_dir / node_state(1)).read_text())


def test_the_end_of_its_session_stops_the_node_and_its_worker_in_another_session(run_dir):
    proc = host_run(run_dir)
    w = worker(run_dir)
    assert proc.stdout.readline() == "packrun: node 1 (b): started\n"
    assert proc.stdout.readline() == "packrun: node 1 (b): training\n"
    assert w in [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    t0 = time.monotonic()
    proc.stdin.close()                      # what ssh does when its session ends
    assert proc.wait(timeout=30) == 143
    assert time.monotonic() - t0 < 5
    assert gone(w)
    assert state(run_dir)["state"] == "stopped" and state(run_dir)["reason"] == \
        "its session ended"
    assert "packrun: node 1 (b): stopped: its session ended" in proc.stdout.read()


def test_a_failed_rank_is_named_in_the_nodes_state(run_dir):
    proc = host_run(run_dir, stdin=subprocess.DEVNULL, STUB="fail")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "packrun: node 1 (b): failed: rank 1 exited with status 3" in out
    doc = state(run_dir)
    assert (doc["state"], doc["rank"], doc["exit_code"], doc["code"], doc["host"]) == \
        ("failed", 1, 3, 1, "b")
    assert gone(worker(run_dir))


@pytest.mark.parametrize("stub, how, exit_code, sig", [
    ("fail-alone", "exited with status 3", 3, None),
    ("killed-alone", "was killed by signal 9 (SIGKILL)", None, 9)])
def test_a_failed_rank_fails_the_node_while_its_launcher_waits_on(run_dir, stub, how, exit_code,
                                                                  sig):
    """msrun ends only when its scheduler stops hearing from a dead rank (half a minute on):
    the node fails at once, naming the rank, its exit status or the signal msrun reports."""
    t0 = time.monotonic()
    proc = host_run(run_dir, stdin=subprocess.DEVNULL, STUB=stub)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:  # a node program that waited on is not left behind, nor its worker
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not gone(w := worker(run_dir)):
            os.kill(w, signal.SIGKILL)
    assert time.monotonic() - t0 < 20, out
    assert proc.returncode not in (0, 75), out
    assert f"packrun: node 1 (b): failed: rank 1 {how}" in out
    doc = state(run_dir)
    assert (doc["state"], doc["rank"], doc["exit_code"], doc["signal"]) == \
        ("failed", 1, exit_code, sig)


def test_stop_node_stops_what_the_node_program_recorded(run_dir):
    proc = host_run(run_dir, stdin=subprocess.DEVNULL)   # no session to watch
    w = worker(run_dir)
    # (the worker's pid file can come before the node program's first state)
    wait_for(lambda: (run_dir / node_state(1)).exists() and state(run_dir)["state"] == "training",
             30, "training")
    r = subprocess.run([sys.executable, "-m", "launcher.node", "stop-node", str(run_dir), "1"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert proc.wait(timeout=30) == 143
    assert gone(w)


def test_a_script_that_fails_before_any_rank_starts_names_no_rank(run_dir):
    (run_dir / "logs/worker_1.pid").write_text("1\n")    # an earlier attempt's
    os.utime(run_dir / "logs/worker_1.pid", (1, 1))
    proc = host_run(run_dir, stdin=subprocess.DEVNULL, STUB="early")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    doc = state(run_dir)
    assert (doc["state"], doc["rank"], doc["code"]) == ("failed", None, 2)
    assert doc["reason"] == "the launch script exited with status 2 before any rank failed"
    assert "node check failed" in (run_dir / "logs/node1.out").read_text()


# A worker as the stall watchdog sees one (src/train.py's stack answer, one progress record),
# then no progress; msrun.sh starts it as rank 1 in a session of its own.
STALLING_WORKER = """
import os, sys, time
from pathlib import Path
from launcher.core.rundir.progress import Event, Progress, Stage, write_progress
from src.train import answer_stack_requests

run_dir = Path(sys.argv[1])
answer_stack_requests(run_dir, 1)
write_progress(run_dir, Progress(rank=1, pid=os.getpid(), attempt=1, seq=1, time=time.time(),
                                 stage=Stage.TRAINING, event=Event.STEP, epoch=1, step=1,
                                 steps_per_epoch=4, global_step=1))


def stuck_for_good():
    while True:
        time.sleep(1)


stuck_for_good()
"""
STALLING_MSRUN = """#!/bin/bash
cd "$(dirname "$0")"
setsid "$FAKE_PYTHON" stalling_worker.py "$PWD" &
echo $! > logs/worker_1.pid
wait
"""


def test_a_stall_stops_the_node_with_its_ranks_stacks_in_its_state(make_job):
    """The node program's stall watchdog: its rank makes no progress for stall_timeout (2 s;
    node 0's rank never reports): the node stops, its state says failed (124) with the stall,
    the rank's stacks name where it waits."""
    spec = load_job(make_job(nodes=2, hosts="a,b", master_port=8118, stall_timeout=2,
                             startup_timeout=2))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=REPO)
    (run_dir / "msrun.sh").write_text(STALLING_MSRUN)
    (run_dir / "stalling_worker.py").write_text(STALLING_WORKER)
    nodes.write_plan(run_dir, ["a", "b"], ["10.0.0.1", "10.0.0.2"], [], False)
    proc = host_run(run_dir, stdin=subprocess.DEVNULL, FAKE_PYTHON=sys.executable,
                    PYTHONPATH=str(REPO))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 124, out
    doc = state(run_dir)
    assert (doc["state"], doc["code"], doc["rank"]) == ("failed", 124, 0), doc
    assert doc["reason"].startswith("no rank made progress for ") and \
        "rank 0 differs: it never reported progress" in doc["reason"]
    entry = {e["rank"]: e for e in doc["stall"]["per_rank"]}
    assert entry[1]["answered"] and entry[1]["top_frame"].endswith(" in stuck_for_good")
    assert not entry[0]["answered"] and entry[0]["state"] == "no pid"
    assert "stalling_worker.py\", line " in (run_dir / "logs" / "worker_1.stack").read_text()
    assert gone(worker(run_dir))
