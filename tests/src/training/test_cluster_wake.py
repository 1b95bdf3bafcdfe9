"""src/training/cluster_wake.py: processes of a MindSpore CPU cluster woken from MindSpore's
fixed C sleeps (MCCL's 3 s address poll, the scheduler's 5 s finalize poll). Stand-ins sleep in
libc's sleep() as MindSpore does; every sleep here is 60 s, so a process that ends within the
tests' bound was woken."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.core.rundir.names import LOGS, worker_exit, worker_pid
from src.training import cluster_wake
from tests.helpers import REPO

pytestmark = pytest.mark.unit

BOUND_S = 20  # far below the 60 s sleeps, far above a wake on a loaded machine

# A rank: (with the handler unless told) sleeps in C like MCCL until FLAG exists, then prints
# how many sleeps it took. argv: RUN_DIR FLAG HANDLER(0/1)
SLEEPER = """
import ctypes, sys
from pathlib import Path
from src.training import cluster_wake
if sys.argv[3] == "1":
    cluster_wake.prepare()
print("ready", flush=True)
libc, sleeps = ctypes.CDLL(None), 0
while not Path(sys.argv[2]).exists():
    libc.sleep(60)
    sleeps += 1
print(sleeps, flush=True)
"""

# The scheduler: starts its waker, then loops in C sleeps until FLAG exists (the workers have
# unregistered), as ClusterContext::Finalize does. argv: RUN_DIR FLAG
SCHEDULER = """
import ctypes, sys
from pathlib import Path
from src.training import cluster_wake
cluster_wake.prepare()
cluster_wake.wake_scheduler_when_workers_leave(Path(sys.argv[1]))
print("ready", flush=True)
libc = ctypes.CDLL(None)
while not Path(sys.argv[2]).exists():
    libc.sleep(60)
print("left", flush=True)
"""


def start(code: str, *args) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    return p


@pytest.fixture
def run_dir(tmp_path) -> Path:
    (tmp_path / LOGS).mkdir()
    return tmp_path


def test_a_worker_wakes_its_peers_of_the_run_and_no_other_process(run_dir):
    flag = run_dir / "addresses_published"
    peer = start(SLEEPER, run_dir, flag, 1)
    (run_dir / worker_pid(1)).write_text(f"{peer.pid}\n")
    stranger = subprocess.Popen(["sleep", "600"])  # a pid file naming a process of another run
    (run_dir / worker_pid(2)).write_text(f"{stranger.pid}\n")
    (run_dir / worker_pid(3)).write_text("4194999\n")  # a worker long gone
    try:
        time.sleep(0.3)  # the peer is in its first sleep
        flag.touch()
        assert cluster_wake.wake_peers(run_dir) == 1
        out, _ = peer.communicate(timeout=BOUND_S)
        assert out.strip() == "1"  # one sleep, cut short
        assert stranger.poll() is None
    finally:
        for p in (peer, stranger):
            p.kill()
            p.wait()


def test_a_wake_before_the_handler_does_nothing(run_dir):
    # SIGWINCH's default action is to ignore it: a process not (yet) prepared is neither killed
    # nor woken
    flag = run_dir / "never"
    sleeper = start(SLEEPER, run_dir, flag, 0)
    (run_dir / worker_pid(0)).write_text(f"{sleeper.pid}\n")
    try:
        assert cluster_wake.wake_peers(run_dir) == 1
        time.sleep(1)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_scheduler_is_woken_once_its_workers_leave_and_not_before(run_dir):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                               str(run_dir)])
    (run_dir / worker_pid(0)).write_text(f"{worker.pid}\n")
    unregistered = run_dir / "unregistered"
    scheduler = start(SCHEDULER, run_dir, unregistered)
    try:
        time.sleep(1)  # the waker has found the worker
        unregistered.touch()  # as if the cluster were done, but the worker has not left:
        time.sleep(1.5)
        assert scheduler.poll() is None  # no wake yet
        (run_dir / worker_exit(0)).write_text("0\n")  # the worker leaves
        out, _ = scheduler.communicate(timeout=BOUND_S)
        assert out == "left\n"
    finally:
        for p in (scheduler, worker):
            p.kill()
            p.wait()


def test_the_waker_ends_with_its_scheduler(run_dir):
    scheduler = subprocess.Popen(["sleep", "600"])
    waker = subprocess.Popen([sys.executable, "-m", "src.training.cluster_wake", str(run_dir),
                              str(scheduler.pid)], cwd=REPO)
    try:
        time.sleep(0.5)
        assert waker.poll() is None
        scheduler.kill()
        scheduler.wait()
        assert waker.wait(timeout=BOUND_S) == 0
    finally:
        for p in (scheduler, waker):
            p.kill()
            p.wait()
