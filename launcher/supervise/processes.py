"""The one place that starts child processes, forwards signals to them and decides exit codes.

Children run in their own session (process group), so a signal reaches every process they
started (MindSpore's data workers, msrun's workers) and nothing outlives packrun.
"""

from __future__ import annotations

import codecs
import io
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence, cast

import psutil

from launcher.core.log import get_logger
from launcher.core.rundir.names import GRACE_S
from launcher.core.worker_output import ChatterFilter

log = get_logger(__name__)


def exit_code(returncode: int) -> int:
    """A shell-style exit status: a child killed by signal N gives 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


# How often wait_gone looks: a teardown ends this long after its last process at most.
GONE_POLL_S = 0.02


def ended(p: psutil.Process) -> bool:
    """Whether `p` has ended: gone, or a zombie. An orphan's zombie (a rank whose launch script
    is gone) waits for PID 1 to reap it, which in a container may take seconds or never come;
    psutil's own wait counts it as alive until then."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` s for every process of `procs` to end (see ended()); those still
    running then. Reaps nothing: a child's exit status stays for the Popen that owns it."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        alive = [p for p in alive if not ended(p)]
        left = deadline - time.monotonic()
        if not alive or left <= 0:
            return alive
        time.sleep(min(GONE_POLL_S, left))


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the child's whole group, SIGKILL what is left after `grace_s`."""
    kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    kill_group(proc, signal.SIGKILL)  # also reaps grandchildren that ignored SIGTERM
    proc.wait()


@contextmanager
def forward_signals(procs: Sequence[subprocess.Popen], grace_s: float = GRACE_S) -> Iterator[dict]:
    """While active, SIGINT/SIGTERM to packrun stop the children's groups (TERM, then KILL after
    `grace_s`). Yields a dict whose "signal" is set to the signal received, if any."""
    state: dict = {"signal": None}

    def kill_all() -> None:
        for p in procs:
            kill_group(p, signal.SIGKILL)

    def handler(signum, _frame):
        first = state["signal"] is None
        state["signal"] = signum
        for p in procs:
            kill_group(p, signal.SIGTERM if first else signal.SIGKILL)
        if first:
            timer = threading.Timer(grace_s, kill_all)
            timer.daemon = True
            timer.start()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def spawn(cmd: Sequence[str | Path], env: dict | None = None, cwd: str | Path | None = None,
          stdout=subprocess.PIPE) -> subprocess.Popen:
    log.debug(f"running {shlex.join(map(str, cmd))}" + (f" in {cwd}" if cwd else ""))
    return subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd, stdout=stdout,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def run_streaming(cmd: Sequence[str | Path], log_path: Path, env: dict | None = None,
                  cwd: str | Path | None = None, console=None, received: dict | None = None,
                  started: Callable[[subprocess.Popen], None] | None = None) -> int:
    """Run `cmd`, copying its merged output to `log_path` and the console as it comes.
    Returns its exit status; on Ctrl-C / SIGTERM the child is stopped and 130 / 143 returned
    (and `received["signal"]` set, when `received` is given, to tell that from a child killed
    by a signal). `started(proc)` is called once the child runs (the stall watchdog's stop)."""
    console = console or sys.stdout
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = spawn(cmd, env=env, cwd=cwd)
    if started is not None:
        started(proc)
    out = cast(io.BufferedReader, proc.stdout)  # spawn() pipes it, buffered
    with open(log_path, "ab") as log, forward_signals([proc]) as got:
        try:
            # chunks, not lines: a progress line rewritten with \r reaches the console live
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            chatter = ChatterFilter()  # MindSpore's INFO/WARNING lines: the log only
            for chunk in iter(lambda: out.read1(65536), b""):
                log.write(chunk)
                log.flush()
                console.write(chatter.feed(decoder.decode(chunk)))
                console.flush()
            console.write(chatter.flush())
        finally:
            out.close()
            if proc.poll() is None and got["signal"] is None:
                stop(proc)  # packrun itself is failing: leave nothing behind
            proc.wait()
            kill_group(proc, signal.SIGKILL)  # stragglers the worker left in its group
    if received is not None:
        received["signal"] = got["signal"]
    if got["signal"] is not None:
        return 128 + got["signal"]
    return exit_code(proc.returncode)
