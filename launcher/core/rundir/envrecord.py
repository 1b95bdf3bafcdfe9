"""env.json: what a run ran with, recorded at every attempt, and what changed since the last one.

Written by the control plane when an attempt begins (launcher/core/rundir/attempts.py `begin`,
for `packrun run`, `debug`, node-launch on node 0 and the Slurm batch program): packrun's
version, its git commit and whether the checkout had uncommitted changes, Python, MindSpore and
numpy (their installed versions: nothing is imported), the native kernels' digest
(launcher/core/native_digest.py, cached), CANN's and the Ascend / NVIDIA driver's versions where
installed, the hosts (Slurm's node list, else this host) and the cores this launch may use, the
HCCL_*, MS_*, ASCEND_* and CUDA_* variables, and the rank table's sha256.

A resume or a restart compares the new record with the one before (`changes`) and logs each
difference as a warning naming the old and the new value: a different MindSpore, another node,
a changed HCCL variable explain a run that behaves differently after a restart. What would make
the resume wrong is refused elsewhere, before this (the worker refuses a last.ckpt that does not
fit the job); here nothing is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

from launcher.core import hostlist
from launcher.core.errors import UserError
from launcher.core.native_digest import library_digest
from launcher.core.paths import REPO
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.names import ENV_JSON, RANK_TABLE_JSON
from launcher.core.rundir.schema import read_json, stamped

VARIABLE_PREFIXES = ("HCCL_", "MS_", "ASCEND_", "CUDA_")
# The record's keys in the order `packrun status` shows them; "recorded" (when) never counts as
# a change.
FIELDS = ("packrun", "commit", "dirty", "python", "mindspore", "numpy", "native_kernels", "cann",
          "driver", "hosts", "cores", "rank_table_sha256", "variables")

# Where CANN and the drivers say their versions (key=value files; the first that exists wins).
CANN_INFO = ("{home}/{arch}-linux/ascend_toolkit_install.info",
             "/usr/local/Ascend/ascend-toolkit/latest/{arch}-linux/ascend_toolkit_install.info",
             "/usr/local/Ascend/cann/{arch}-linux/ascend_toolkit_install.info")
ASCEND_DRIVER_INFO = "/usr/local/Ascend/driver/version.info"
NVIDIA_DRIVER_INFO = "/proc/driver/nvidia/version"


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    if not (REPO / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                           timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _key_value(path: str, key: str) -> str | None:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip().lower() == key.lower() and value.strip():
            return value.strip()
    return None


def cann_version(env: dict) -> str | None:
    home = env.get("ASCEND_HOME_PATH") or env.get("ASCEND_TOOLKIT_HOME") or "/nonexistent"
    for pattern in CANN_INFO:
        found = _key_value(pattern.format(home=home, arch=platform.machine()), "version")
        if found:
            return found
    return None


def driver_version() -> str | None:
    ascend = _key_value(ASCEND_DRIVER_INFO, "Version")
    if ascend:
        return f"Ascend {ascend}"
    try:
        first = Path(NVIDIA_DRIVER_INFO).read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return f"NVIDIA {first.strip()}"


def _hosts(env: dict) -> list[str]:
    nodes = env.get("SLURM_JOB_NODELIST")
    if nodes:
        try:
            return hostlist.expand(nodes)
        except UserError:
            return [nodes]
    return [socket.gethostname()]


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def collect(run_dir: Path, env: dict | None = None) -> dict:
    """This launch's record (see the module's docstring)."""
    env = dict(os.environ if env is None else env)
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "packrun": _installed("packrun"),
        "commit": commit.strip() if commit else None,
        "dirty": bool(status.strip()) if status is not None else None,
        "python": platform.python_version(),
        "mindspore": _installed("mindspore"),
        "numpy": _installed("numpy"),
        "native_kernels": library_digest(),
        "cann": cann_version(env),
        "driver": driver_version(),
        "hosts": _hosts(env),
        "cores": len(os.sched_getaffinity(0)),  # what this launch may run on
        "rank_table_sha256": _sha256(Path(run_dir) / RANK_TABLE_JSON),
        "variables": {k: v for k, v in sorted(env.items()) if k.startswith(VARIABLE_PREFIXES)},
    }


def read(run_dir: Path) -> dict | None:
    """The run directory's env.json, or None (none yet, or unreadable)."""
    try:
        found = read_json(Path(run_dir) / ENV_JSON)
    except UserError:  # a newer packrun's: nothing to compare with
        return None
    return found if isinstance(found, dict) else None


def changes(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(what, old value, new value) for each difference; each variable is its own entry."""
    out: list[tuple[str, object, object]] = []
    for key in FIELDS:
        if key == "variables":
            before, after = old.get(key) or {}, new.get(key) or {}
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    out.append((name, before.get(name), after.get(name)))
        elif old.get(key) != new.get(key):
            out.append((key, old.get(key), new.get(key)))
    return out


def describe_change(what: str, old, new) -> str:
    def shown(v) -> str:
        if v is None:
            return "(none)"
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return f"{what}: {shown(old)} -> {shown(new)}"


def record(run_dir: Path, env: dict | None = None) -> list[str]:
    """Write this launch's env.json; the changes since the one before, as warning lines."""
    run_dir = Path(run_dir)
    old = read(run_dir)
    new = collect(run_dir, env)
    write_atomic(run_dir / ENV_JSON,
                 json.dumps(stamped(new | {"recorded": time.time()}), indent=1) + "\n")
    if old is None:
        return []
    return [describe_change(*c) for c in changes(old, new)]


def summary(run_dir: Path) -> list[str]:
    """env.json as `packrun status` shows it (nothing when there is none)."""
    rec = read(run_dir)
    if rec is None:
        return []
    commit = rec.get("commit")
    version = f"packrun {rec.get('packrun') or '?'}" + (
        f" ({commit[:12]}{', uncommitted changes' if rec.get('dirty') else ''})" if commit else "")
    parts = [version, f"Python {rec.get('python')}", f"MindSpore {rec.get('mindspore')}",
             f"numpy {rec.get('numpy')}"]
    for key, label in (("cann", "CANN"), ("driver", "driver"),
                       ("native_kernels", "native kernels")):
        if rec.get(key):
            parts.append(f"{label} {rec[key]}")
    lines = ["environment: " + ", ".join(parts),
             f"  hosts: {','.join(rec.get('hosts') or [])}; cores: {rec.get('cores')}"
             + (f"; rank table sha256 {rec['rank_table_sha256'][:16]}"
                if rec.get("rank_table_sha256") else "")]
    variables = rec.get("variables") or {}
    if variables:
        lines.append("  " + " ".join(f"{k}={v}" for k, v in variables.items()))
    return lines
