"""No orphans (launcher/supervise/lifeline.py): a launcher killed with SIGKILL leaves nothing it
started running, however deep or detached (own sessions, re-parented to init); its run
directory's lock stays held until they are gone and is free right after; processes that do not
carry the launcher's token are left alone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.core.errors import UserError
from launcher.core.rundir.lock import acquire
from launcher.core.rundir.names import LIFELINE_ENV
from launcher.supervise import lifeline
from tests.helpers import REPO, packrun_env, wait_for

pytestmark = pytest.mark.unit

BOUND_S = 30  # the tests' bound on a loaded machine; benchmarks/bench_orphans.py measures ~2 s

# A launcher: takes the lock and a lifeline, starts a tree of processes that hide from a process
# group kill (a new session, a double fork whose middle exits, one that ignores SIGTERM), prints
# their pids, and waits.
LAUNCHER = """
import subprocess, sys, time
from launcher.core.rundir.lock import acquire
from launcher.supervise import lifeline
lock = acquire(sys.argv[1], "test launcher")
line = lifeline.hold(lock, sys.argv[1], grace_s=float(sys.argv[2]))
procs = [
    subprocess.Popen(["sleep", "600"], start_new_session=True),
    subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 600 & wait"], start_new_session=True),
]
double = subprocess.run(["bash", "-c", "setsid sleep 600 >/dev/null 2>&1 & echo $!"],
                        capture_output=True, text=True)
print(*[p.pid for p in procs], double.stdout.strip(), flush=True)
time.sleep(600)
"""


def start_launcher(run_dir: Path, grace_s: float = 0.5) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(run_dir), str(grace_s)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env=packrun_env())
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 3
    return proc, pids


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def lock_free(run_dir: Path) -> bool:
    try:
        acquire(run_dir, "after").release()
        return True
    except UserError:
        return False


def test_kill_9_of_the_launcher_ends_everything_it_started_and_frees_the_lock(tmp_path):
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)  # no token
    proc, pids = start_launcher(tmp_path, grace_s=1.0)
    try:
        token = psutil.Process(pids[0]).environ()[LIFELINE_ENV]
        # the three sleeps and the bash (whose `sleep &` may not have been forked yet)
        wait_for(lambda: len(lifeline.carriers(token)) >= 4, BOUND_S, "the launcher's tree")
        assert not lock_free(tmp_path)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        wait_for(lambda: not any(alive(p) for p in pids), BOUND_S, "the launcher's processes")
        wait_for(lambda: lock_free(tmp_path), BOUND_S, "the run directory's lock")
        assert time.monotonic() - t0 < BOUND_S
        assert lifeline.carriers(token) == []
        assert alive(bystander.pid)
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        bystander.kill()
        bystander.wait()


def test_the_lock_is_held_until_the_last_process_is_gone(tmp_path):
    """The bash that ignores SIGTERM outlives the grace: until its SIGKILL, a second launch of
    the run directory is refused."""
    proc, pids = start_launcher(tmp_path, grace_s=1.5)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not alive(pids[0]), BOUND_S, "the SIGTERM")
        assert alive(pids[1]) and not lock_free(tmp_path)
        wait_for(lambda: lock_free(tmp_path), BOUND_S, "the lock")
        assert not any(alive(p) for p in pids)
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_orderly_release_ends_the_watcher_and_restores_the_environment(tmp_path):
    os.environ.pop(LIFELINE_ENV, None)
    with acquire(tmp_path, "test") as lock:
        with lifeline.hold(lock, tmp_path, grace_s=0.5) as line:
            assert os.environ[LIFELINE_ENV] == line.token == line.env[LIFELINE_ENV]
            child = subprocess.Popen(["sleep", "600"], start_new_session=True)
            assert lifeline.carriers(line.token) == [psutil.Process(child.pid)]
            assert line.watcher.poll() is None
        # released: the watcher swept what was left and exited
        assert line.watcher.returncode == 0
        assert child.wait(timeout=BOUND_S) == -signal.SIGTERM
        assert LIFELINE_ENV not in os.environ
    assert lock_free(tmp_path)


def test_the_watcher_does_not_hold_the_launchers_other_descriptors(tmp_path):
    """The write end of the pipe is the launcher's alone: a child that inherited it would keep
    the watcher waiting after the launcher's death."""
    with lifeline.hold(None, tmp_path) as line:
        child = subprocess.Popen(["sleep", "600"])
        try:
            # `sleep`'s own start may hold a descriptor for a moment (seen once as fd 3 on a
            # loaded machine, not reproduced in 3000 starts: Popen returns while exec is still
            # under way, then the loader opens libraries); an inherited one stays.
            held: dict[str, str] = {}

            def none_held() -> bool:
                held.clear()
                for fd in os.listdir(f"/proc/{child.pid}/fd"):
                    if int(fd) > 2:
                        with contextlib.suppress(OSError):
                            held[fd] = os.readlink(f"/proc/{child.pid}/fd/{fd}")
                return not held

            with contextlib.suppress(AssertionError):  # the message below names what is held
                wait_for(none_held, 10, "no descriptor beyond 0-2", every=0.05)
            assert held == {}, f"a child of the launcher holds {held}"
            # Beyond stdin (the pipe's read end), stdout and stderr the watcher keeps one
            # descriptor, its copy of the read end (the lock's, when there is one). Files its
            # interpreter opens while it imports come and go: wait for those to close; an
            # inherited descriptor would stay.
            pid = line.watcher.pid
            extra = wait_for(lambda: (fds := [int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
                                              if int(fd) > 2]) and len(fds) == 1 and fds,
                             10, "the watcher to hold one descriptor beyond 0-2", every=0.05)
            pipe = os.readlink(f"/proc/{pid}/fd/0")
            assert pipe.startswith("pipe:") and os.readlink(f"/proc/{pid}/fd/{extra[0]}") == pipe
            for fd in (0, extra[0]):  # read ends only: the write end is the launcher's alone
                flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1]
                            .split()[0], 8)
                assert flags & os.O_ACCMODE == os.O_RDONLY
        finally:
            child.kill()
            child.wait()
