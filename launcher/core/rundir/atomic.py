"""Atomic writes: a reader of a run directory sees the old file or the new one, never a part.

Every file packrun writes into a run or sweep directory that another process may read goes
through `write_atomic`. Its temporary file is `.<name>.<pid>.<random>.tmp`: a writer killed
between the two steps leaves one, and the next write of the same file removes those of writers
no longer running.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    """Write `text` to `path` through a temporary file in the same directory and os.replace, so a
    reader sees the old file or the new one, never a partial one. `mode` defaults to what a plain
    open() would give (0o666 less the umask)."""
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes of `path` killed midway left (their writer's pid
    is no longer running); the paths removed."""
    path = Path(path)
    removed = []
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = leftover.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            try:
                leftover.unlink()
                removed.append(leftover)
            except FileNotFoundError:
                pass
    return removed
