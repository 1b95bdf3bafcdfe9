"""launcher/supervise/processes.py: a teardown waits for processes to end, and a zombie has
ended: an orphan's zombie waits for PID 1 to reap it (seconds in some containers, never in
others), which psutil's own wait counts as alive."""

import signal
import subprocess
import time

import psutil
import pytest

from launcher.supervise import processes
from launcher.supervise.supervisor import stop_processes
from tests.helpers import wait_for

pytestmark = pytest.mark.unit


def zombie(code: int = 3) -> subprocess.Popen:
    """A child that has exited and that nobody has reaped yet."""
    proc = subprocess.Popen(["sh", "-c", f"exit {code}"])
    wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE, 30, "the zombie")
    return proc


def test_a_zombie_has_ended_and_its_exit_status_stays_for_its_popen():
    proc = zombie(3)
    p = psutil.Process(proc.pid)
    assert processes.ended(p)
    start = time.monotonic()
    assert processes.wait_gone([p], 30) == []
    assert time.monotonic() - start < 10  # not the 30 s psutil.wait_procs waits on a zombie
    assert proc.wait(timeout=5) == 3      # not reaped by the wait


def test_wait_gone_returns_what_still_runs_after_the_timeout():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        p = psutil.Process(proc.pid)
        assert not processes.ended(p)
        assert processes.wait_gone([p], 0.1) == [p]
    finally:
        proc.kill()
        proc.wait()
    assert processes.ended(p) and processes.wait_gone([p], 5) == []


def test_stop_processes_is_done_when_the_last_process_is_a_zombie():
    """TERM, then the ranks end; the teardown ends with them, not a grace period later."""
    proc = subprocess.Popen(["sleep", "60"])
    p = psutil.Process(proc.pid)
    start = time.monotonic()
    stop_processes([p], grace_s=30)   # proc is left unreaped: a zombie
    assert time.monotonic() - start < 10
    assert proc.wait(timeout=5) == -signal.SIGTERM
