"""`packrun board [DIR]`: TensorBoard over DIR (default `runs`: every run and sweep under it; a
sweep directory: its points by name; a run directory: that run) on a free port.

Every run writes its event files into RUN_DIR/tb (src/training/tensorboard_events.py);
TensorBoard finds them below DIR and names each run by its path (`<point>/tb`, `<run>/tb`). The
viewer is optional (`pip install tensorboard`, or packrun's `[board]` extra): training never
needs it. It binds 127.0.0.1 unless --host says otherwise; from an ssh session (a login node) it
also prints the `ssh -L` line that brings the port to a laptop.
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import socket
import sys
from pathlib import Path
from typing import Mapping

from launcher.core.errors import UserError
from launcher.core.log import get_logger

log = get_logger(__name__)

INSTALL_HINT = "pip install tensorboard (or install packrun with its [board] extra)"


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def free_port(host: str) -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def access_lines(host: str, port: int, env: Mapping[str, str], fqdn: str, user: str) -> list[str]:
    """What to open: the URL on this machine (the bind address), and from an ssh session (a
    login node: SSH_CONNECTION is set) the tunnel a laptop needs."""
    shown = f"[{host}]" if ":" in host else host
    lines = [f"TensorBoard at http://{shown}:{port}/ (bound to {host}; Ctrl-C stops it)"]
    if env.get("SSH_CONNECTION") or env.get("SSH_CLIENT"):
        target = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        lines.append(f"from your laptop: ssh -N -L {port}:{target}:{port} {user}@{fqdn} "
                     f"then open http://localhost:{port}/")
    return lines


def tensorboard_argv(logdir: Path, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host,
            "--port", str(port)]


def board_command(dir: str = "runs", port: int | None = None, host: str = "127.0.0.1") -> int:
    """Become TensorBoard for `dir` (exec: Ctrl-C stops it) after printing where it listens."""
    logdir = Path(str(dir)).expanduser()
    if not logdir.is_dir():
        raise UserError(f"{logdir} is not a directory; pass a run, sweep or runs directory "
                        "(default: runs, where packrun writes them)")
    if not tensorboard_installed():
        raise UserError(f"TensorBoard is not installed (an optional viewer): {INSTALL_HINT}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 < port < 65536):
        raise UserError(f"--port is {port!r}; give a TCP port number (1-65535), or leave it out "
                        "for a free one")
    try:
        port = port or free_port(host)
    except (OSError, UnicodeError) as e:
        raise UserError(f"--host {host}: cannot bind a port there ({e}); give an address of this "
                        "machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    name = socket.getfqdn()
    if name.startswith("localhost"):  # no DNS name: the one ssh knows it by, at least here
        name = socket.gethostname()
    for line in access_lines(host, port, os.environ, name, getpass.getuser()):
        print(f"packrun: {line}", flush=True)
    print(f"packrun: showing {logdir.resolve()}", flush=True)
    argv = tensorboard_argv(logdir.resolve(), host, port)
    log.debug(f"packrun: exec {' '.join(argv)}")
    # TensorBoard takes this process's place: Ctrl-C and a stopper's SIGTERM reach it, and
    # nothing is left behind when it goes
    os.execv(argv[0], argv)
    return 1  # not reached
