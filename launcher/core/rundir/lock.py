"""One launch at a time per run directory: an exclusive flock on RUN_DIR/run.lock.

`packrun debug`, `run` (also with --resume), `node-launch` and job.sbatch (its batch program,
launcher/node/batch.py) take the lock before they start a worker and hold it until they exit;
a second launch of the same run directory is refused with exit status 2, naming the holder
(pid, host, start time, command) that the holder wrote into the lock file. The kernel drops
the lock when the holding process ends, however it ends (crash, kill -9): there is no stale
lock to clean up, and the file's text only describes the last holder.

Shared storage: the lock is only as good as the file system's flock. Local disks, NFSv4 (Linux
maps flock onto NFS byte-range locks, so clients see each other's), CephFS, GPFS and BeeGFS
(with tuneUseGlobalFileLocks) lock across nodes; NFS mounted with `nolock`, and Lustre
without `-o flock` (`localflock` locks per node only), do not: there two nodes can both take it.
When a node dies holding the lock, NFSv4 releases it after the server's lease (about 90 s).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.names import node_lock


class RunLock:
    """The held lock (keep a reference for as long as the launch runs; `release` or process exit
    frees it)."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def holder(path: Path) -> str:
    """The holder as its lock file describes it."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process (it left no description)"
    return (f"{info.get('command', 'a launch')} (pid {info['pid']} on {info.get('host', '?')}, "
            f"started {info.get('started', '?')})")


def acquire(run_dir: str | os.PathLike, command: str, node_rank: int = 0) -> RunLock:
    """Take the run directory's lock for `command` (e.g. "packrun run --resume"), or raise a
    UserError naming the launch that holds it."""
    run_dir = Path(run_dir)
    path = run_dir / node_lock(node_rank)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise UserError(f"cannot lock run directory {run_dir} ({path.name}: {e.strerror}); "
                        "a run directory must be writable to run in it") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            where = "" if node_rank == 0 else f" (node {node_rank})"
            raise UserError(f"run directory {run_dir}{where} is in use by {holder(path)}; one "
                            "launch at a time writes a run directory: wait for it to end, or "
                            "stop it first") from None
        raise UserError(f"cannot lock run directory {run_dir} ({e.strerror}); its file system "
                        "does not support flock (README: Site customisation)") from None
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return RunLock(fd, path)
