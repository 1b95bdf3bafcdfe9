"""No orphans: when a launcher dies, however it dies (kill -9 included), every process it started
ends within seconds and its run directory is free again.

A launcher (`packrun run`, `debug`, `node-launch`, the Slurm batch program, an ssh multi-node
launch) holds a lifeline for as long as it launches:

    with acquire(run_dir, "packrun run") as lock, lifeline.hold(lock, run_dir) as line:
        ...  # every process started from here carries line.token in its environment

`hold(lock, run_dir)` makes a pipe and starts a small watcher process (`python -m
launcher.supervise.lifeline TOKEN GRACE RUN_DIR`, in a session of its own) that inherits the
pipe's read end and a duplicate of the run directory's lock (an flock: held until both the
launcher and the watcher have closed it). The launcher keeps the write end, which no other child
inherits (close_fds). The watcher blocks reading the pipe; the read returns end-of-file when the
launcher closes it, or when the kernel does because the launcher died. The watcher then ends
every process whose environment carries the token (`sweep`): SIGTERM, SIGKILL after
LIFELINE_GRACE_S, again until none is left, and exits, which frees the lock. So a second launch
of the run directory (`packrun run --resume`) is refused until the old one's processes are gone,
and starts as soon as they are.

The token (LIFELINE_ENV) reaches every descendant through the environment: `hold` exports it in
os.environ while it is held (and restores the old value after), so every launch path that builds
its children's environment from os.environ passes it on, as do msrun (its scheduler and workers,
each in a session of its own), mpirun, srun and bash; `Lifeline.env` is the same variable for a
caller that builds an environment from scratch. A process is found by its environment, not by its
ancestry, so sessions, double forks and re-parenting to init do not hide it.

Why not PR_SET_PDEATHSIG: it fires on the death of the *thread* that forked, is cleared in a
setuid exec, and only reaches the direct child; msrun starts its workers itself, in new sessions,
and would have to set it on each. A pipe watched by one process works for any depth of tree.

Remote processes (an srun step's tasks on other nodes, ssh launches) are outside this machine's
process table: the watcher ends their local handle (srun, the ssh client) with SIGTERM first,
which srun forwards to its tasks (Slurm kills the step's processes when srun ends); an ssh
launch should run its remote side under a launcher of that node which holds its own lifeline,
or make the remote command end when its ssh session closes (stdin at end-of-file).

API (for launchers, also multi-node ones):
    hold(lock, run_dir, grace_s) -> Lifeline   context manager; .token, .env, .release()
    carriers(token) -> [psutil.Process]        the live processes that carry the token
    sweep(token, grace_s) -> int               end them (TERM, then KILL); how many there were
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Sequence

import psutil

from launcher.core.paths import importable
from launcher.core.rundir.lock import RunLock
from launcher.core.rundir.names import LIFELINE_ENV, LIFELINE_GRACE_S
from launcher.supervise.processes import wait_gone

KILL_ROUNDS = 20          # SIGKILL sweeps until nothing carries the token (children forking)
RELEASE_WAIT_S = 30.0     # an orderly release waits this long for the watcher to end


class Lifeline:
    """A held lifeline: its token, the watcher, the write end of the pipe."""

    def __init__(self, token: str, watcher: subprocess.Popen, write_fd: int,
                 previous: str | None):
        self.token, self.watcher, self._write_fd, self._previous = token, watcher, write_fd, \
            previous

    @property
    def env(self) -> dict[str, str]:
        """The variable that marks a process as started under this lifeline."""
        return {LIFELINE_ENV: self.token}

    def release(self) -> None:
        """The launcher's orderly end: the watcher sweeps what is left (normally nothing) and
        exits; then the environment is as it was before `hold`."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
            try:
                self.watcher.wait(timeout=RELEASE_WAIT_S)
            except subprocess.TimeoutExpired:
                pass  # it goes on in its own session and frees the lock when done
            if os.environ.get(LIFELINE_ENV) == self.token:
                if self._previous is None:
                    os.environ.pop(LIFELINE_ENV, None)
                else:
                    os.environ[LIFELINE_ENV] = self._previous

    def __enter__(self) -> Lifeline:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold(lock: RunLock | None, run_dir: str | os.PathLike = "",
         grace_s: float = LIFELINE_GRACE_S) -> Lifeline:
    """Start the watcher of a new lifeline (see the module's docstring) and export its token.
    `lock`: the run directory's lock, which the watcher keeps until the processes are gone;
    `run_dir` only names the watcher in `ps`."""
    token = secrets.token_hex(8)
    read_fd, write_fd = os.pipe()  # both not inheritable: the watcher gets read_fd below
    fds = [read_fd] + ([lock.fd] if lock is not None and lock.fd >= 0 else [])
    env = importable({k: v for k, v in os.environ.items() if k != LIFELINE_ENV})
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "launcher.supervise.lifeline", token, str(grace_s),
             str(run_dir)],
            stdin=read_fd, stdout=subprocess.DEVNULL, stderr=None, pass_fds=fds, env=env,
            start_new_session=True)
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    previous = os.environ.get(LIFELINE_ENV)
    os.environ[LIFELINE_ENV] = token
    return Lifeline(token, watcher, write_fd, previous)


def carriers(token: str) -> list[psutil.Process]:
    """The live processes of this machine (that this user may read) whose environment carries
    `token`, this process excepted."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        try:
            if p.environ().get(LIFELINE_ENV) == token and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def _send(procs: Sequence[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def sweep(token: str, grace_s: float = LIFELINE_GRACE_S) -> int:
    """End every process that carries `token`: SIGTERM (srun forwards it to its step, msrun's
    workers stop), SIGKILL to what is left after `grace_s`, repeated while new ones appear (a
    process that forked during the grace). The number of processes found at first."""
    first = carriers(token)
    if not first:
        return 0
    _send(first, signal.SIGTERM)
    wait_gone(first, grace_s)
    for _ in range(KILL_ROUNDS):
        left = carriers(token)
        if not left:
            break
        _send(left, signal.SIGKILL)
        wait_gone(left, 1.0)
    return len(first)


def watch(token: str, grace_s: float, fd: int = 0) -> int:
    """The watcher: wait for end-of-file on `fd` (the launcher closed the pipe or died), then
    sweep. Its exit frees the run directory's lock it inherited."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe ends the watch
    while True:
        try:
            if not os.read(fd, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    t0 = time.monotonic()
    found = sweep(token, grace_s)
    if found:
        print(f"packrun: the launcher is gone: ended {found} process(es) it had started "
              f"in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str]) -> int:
    """`python -m launcher.supervise.lifeline TOKEN GRACE_S [RUN_DIR]` (started by `hold`)."""
    if len(argv) < 2:
        print("usage: python -m launcher.supervise.lifeline TOKEN GRACE_S [RUN_DIR]",
              file=sys.stderr)
        return 2
    return watch(argv[0], float(argv[1]))  # RUN_DIR, the third: only for ps


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
