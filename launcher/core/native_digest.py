"""The native kernels' digest (src/native/): what the compiled library's name carries, and what
a run directory's env.json records (launcher/core/rundir/envrecord.py).

The digest covers the C++ sources and headers, the compiler's version, this CPU's model and
instruction-set flags (the library is built with -march=native), the machine and the flags.
Asking the compiler for its version is the one slow part (a process); its answer is cached per
compiler binary (path, size, modification time) in $TMPDIR/packrun-native-<uid>/, so a launch
or a worker pays it once per compiler, not once per start.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from launcher.core.paths import REPO

NATIVE_DIR = REPO / "src" / "native"
COMPILER = "g++"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")


def cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"packrun-native-{os.getuid()}"


def cpu_identity() -> str:
    """This CPU's model and instruction-set flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(sorted(set(keep))) or platform.processor()


def sources(native_dir: Path = NATIVE_DIR) -> list[Path]:
    """The C++ files compiled into the one library."""
    return sorted(native_dir.glob("*.cc"))


def compiler_version(compiler: str) -> str:
    """`compiler --version`, cached per binary (see the module's docstring)."""
    try:
        st = os.stat(compiler)
        key = f"{os.path.realpath(compiler)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        key = ""
    cache = cache_dir() / "compiler-version.json"
    try:
        known = json.loads(cache.read_text())
        if key and isinstance(known, dict) and isinstance(known.get(key), str):
            return known[key]
    except (OSError, ValueError):
        known = {}
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=False).stdout
    if key:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
            tmp.write_text(json.dumps({**(known if isinstance(known, dict) else {}),
                                       key: version}))
            os.replace(tmp, cache)
        except OSError:
            pass  # not cached: asked again next time
    return version


def digest(files: list[Path], version: str, cpu: str, flags=FLAGS) -> str:
    """The full hex digest of the library built from `files` by a compiler of `version` for
    CPU `cpu` with `flags` (the library's name carries its first 16 characters)."""
    h = hashlib.sha256()
    for part in ([f.read_bytes() for f in files]
                 + [version.encode(), cpu.encode(), platform.machine().encode(),
                    " ".join(flags).encode()]):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def library_digest(native_dir: Path = NATIVE_DIR) -> str | None:
    """The 16-character digest of the library this machine builds from `native_dir` (the one
    in its name), or None without a compiler or sources."""
    compiler = shutil.which(COMPILER)
    files = sources(native_dir)
    if compiler is None or not files:
        return None
    headers = sorted(native_dir.glob("*.h"))
    return digest([*files, *headers], compiler_version(compiler), cpu_identity())[:16]
