"""Where compiled graphs are kept across runs, under which key, and how the store stays bounded.

GRAPH_MODE compiles the network before its first step (12 s for ResNet50 at 224 px on 2 cores),
though a repeated run compiles the very same graphs. MindSpore can keep them (its compile
cache, MS_COMPILER_CACHE_ENABLE / MS_COMPILER_CACHE_PATH), but it finds a cached graph by the
order of compilation alone (`compile_cache_<i>.mindir`) and checks only a hash of the entry
script and its top-level imports outside sys.path: a change of network, shapes, packrun's
kernels or MindSpore would load a stale graph ("Be aware of correctness risks"). So each
distinct graph set gets its own directory, named by a digest of everything that shapes the
graphs (:func:`cache_key`); MindSpore only ever sees the directory of the right key.

    ROOT/<key>/rank_<r>/graph_cache/compile_cache_<i>.mindir   (MindSpore's own layout)
    ROOT/<key>/key.json                                         what the key was made of
    ROOT/.work/<key>-<pid>-.../                                 one worker's private copy

ROOT is $PACKRUN_COMPILE_CACHE_DIR, else $XDG_CACHE_HOME/packrun/compile, else
~/.cache/packrun/compile: per user, created 0700, and refused (the run compiles as before,
with a warning) when another user owns it or others may write to it, since a graph loaded
from it runs as code in the job. The worker side (src/training/compile_cache.py) copies an
entry into a private directory, lets MindSpore read and write only there, and publishes new
graphs back file by file with an atomic rename, so ranks and runs of the same key at once
never see half a file. Entries beyond the size bound go, least recently used first
(:func:`cleanup`). Opt out with `compile_cache = false` in the job or
PACKRUN_COMPILE_CACHE=0.

Standard library only: the launcher checks the settings before it writes a run directory,
the worker uses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from launcher.core.errors import UserError
from launcher.core.rundir.names import (
    COMPILE_CACHE_DIR_ENV,
    COMPILE_CACHE_ENV,
    COMPILE_CACHE_MAX_ENV,
)

DEFAULT_MAX_GIB = 2.0
KEY_JSON = "key.json"      # in each entry: the parts its key was made of (for people)
WORK = ".work"             # private copies of running workers
TRASH = ".trash"           # prefix of entries being removed (renamed first, then deleted)
STALE_WORK_S = 24 * 3600   # a private copy older than this belongs to a killed worker

# Job keys that cannot change a compiled graph: names, paths, launch, Slurm and watch settings.
# Every other key is part of the cache key, so a key added later is safe by default (it can
# only cause a miss, never a stale graph).
NOT_IN_KEY = frozenset({
    "name", "train_dir", "val_dir", "pretrained", "output_dir", "image_check", "compile_cache",
    "max_restarts", "signal_before_s", "requeue", "partition", "account", "qos", "time", "gres",
    "cpus_per_task", "sbatch_extra", "template_dir", "env_setup", "hosts", "master_addr",
    "master_port", "cluster_timeout", "collective_timeout", "bind_cores", "devices",
    "device_id", "rank_table_file", "hccn_conf", "device_ips",
    # how the ranks are started (msrun, mpirun, a rank table) and spread over nodes: the same
    # device and world size (in the key) join the same collective backend (MCCL on CPU, NCCL,
    # HCCL) with the same graphs; the worker (src/) never reads nodes or cards_per_node; an
    # mpirun run reusing msrun's graphs ends with the same weights (tests/src/training/
    # test_compile_cache.py)
    "launcher", "nodes", "cards_per_node",
    # what the host side watches, logs and checks: no graph sees them
    "tensorboard", "log_every_steps", "stall_timeout", "startup_timeout", "ssh",
    "rank_table_version", "node_checks", "net_health_check", "held_card_wait_s",
    # the data pipeline's settings: it runs outside the graphs (and in sink mode feeds them
    # tensors of the same shapes and types whatever these are)
    "min_crop_scale", "hflip", "num_parallel_workers",
})

# The learning rate reaches the optimizer as a scalar Parameter, whose value is data, not graph,
# when it is constant, and for any schedule on CPU in GRAPH_MODE: the worker then sets each
# step's rate from the host (src/training/lr_schedule.py). The schedule, its values and its
# length (epochs x steps) are then in no graph. Elsewhere (Ascend/GPU, which may sink steps to
# the device, and PYNATIVE_MODE) a schedule is an epochs x steps tensor in the graph: there
# these keys count.
LR_AS_DATA = frozenset({"lr", "epochs", "scale_lr", "lr_schedule", "warmup_epochs"})


def constant_lr(schedule: object, warmup_epochs: object) -> bool:
    """A learning rate without schedule or warm-up: one value for every step."""
    return schedule == "constant" and warmup_epochs == 0


def schedule_from_host(device: str, graph_mode: bool) -> bool:
    """Whether the worker sets a learning-rate schedule's rate from the host before each step
    (src/training/lr_schedule.py StepRates) instead of keeping it in the graph."""
    return device == "CPU" and graph_mode


# Values MindSpore's optimizer (nn.Momentum) holds in Parameters, and when evaluation runs:
# data and timing, whatever the device.
VALUES = frozenset({"momentum", "eval_interval", "eval_start_epoch"})

# The feature cache runs a frozen prefix once per image (src/training/feature_cache.py): with
# nothing frozen its keys do nothing, and of them each cache mode reads only its own.
FEATURE_CACHE_KEYS = frozenset({"feature_cache", "cache_views", "cache_max_gib"})
FEATURE_CACHE_ACTS = {"off": frozenset({"feature_cache"}),
                      "eval": frozenset({"feature_cache", "cache_max_gib"}),
                      "augmented": FEATURE_CACHE_KEYS}


@dataclass(frozen=True)
class Settings:
    """The compile cache as the environment sets it: `root` None when it is off (`why`)."""
    root: Path | None
    max_bytes: int
    why: str = ""


def default_root(env: Mapping[str, str]) -> Path:
    if env.get(COMPILE_CACHE_DIR_ENV):
        return Path(env[COMPILE_CACHE_DIR_ENV]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "packrun" / "compile"


def settings(env: Mapping[str, str], job_enabled: bool = True) -> Settings:
    """Raises UserError for a size bound that is not a number."""
    raw = env.get(COMPILE_CACHE_MAX_ENV, "")
    try:
        max_gib = float(raw) if raw.strip() else DEFAULT_MAX_GIB
        if not max_gib >= 0:
            raise ValueError
    except ValueError:
        raise UserError(f"{COMPILE_CACHE_MAX_ENV}={raw!r} is not a size in GiB; set a number "
                        f"such as {DEFAULT_MAX_GIB:g} (0 keeps nothing), or unset it") from None
    max_bytes = int(max_gib * 2**30)
    if not job_enabled:
        return Settings(None, max_bytes, "compile_cache = false in the job")
    if env.get(COMPILE_CACHE_ENV, "1").strip() in ("0", "false", "no", "off"):
        return Settings(None, max_bytes, f"{COMPILE_CACHE_ENV}={env[COMPILE_CACHE_ENV]}")
    if max_bytes == 0:
        return Settings(None, 0, f"{COMPILE_CACHE_MAX_ENV}=0")
    return Settings(default_root(env), max_bytes)


def prepare_root(root: Path) -> str:
    """Make ROOT (0700) if needed; "" when it is safe to use, else why not."""
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = root.stat()
    except OSError as e:
        return f"cannot create {root}: {e.strerror or e}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{root} is not a directory"
    if st.st_uid != os.getuid():
        return f"{root} belongs to another user (uid {st.st_uid}); set {COMPILE_CACHE_DIR_ENV}"
    if st.st_mode & 0o022:
        return (f"{root} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                f"chmod 700 it or set {COMPILE_CACHE_DIR_ENV}")
    return ""


def files_digest(paths: list[Path], base: Path) -> str:
    """sha256 over the files' paths (relative to `base`) and contents."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(base)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def cache_key(parts: Mapping[str, object]) -> str:
    """The entry's name: a digest of `parts` (JSON, keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def spec_part(spec_dict: Mapping[str, object]) -> dict:
    """The job keys that go into the cache key, each as it acts: the learning rate's keys only
    where a schedule is in the graph (LR_AS_DATA, schedule_from_host), the feature cache's only
    where they act (FEATURE_CACHE_ACTS), of the job's `env` only MindSpore's own variables (MS_*:
    a debug or NCCL variable, or a test's fault, compiles nothing else)."""
    inert = set(NOT_IN_KEY) | VALUES
    if constant_lr(spec_dict.get("lr_schedule"), spec_dict.get("warmup_epochs")) or \
            schedule_from_host(str(spec_dict.get("device")), bool(spec_dict.get("graph_mode"))):
        inert |= LR_AS_DATA
    if spec_dict.get("freeze") == "none":
        inert |= FEATURE_CACHE_KEYS
    else:
        inert |= FEATURE_CACHE_KEYS - FEATURE_CACHE_ACTS.get(str(spec_dict.get("feature_cache")),
                                                             FEATURE_CACHE_KEYS)
    part = {k: v for k, v in spec_dict.items() if k not in inert}
    env = part.get("env")
    if isinstance(env, Mapping):
        part["env"] = {k: v for k, v in env.items() if str(k).startswith("MS_")}
    return part


def env_part(env: Mapping[str, str]) -> dict:
    """MindSpore's developer switches (graph-kernel fusion, jit options) change what it
    compiles; they go into the key."""
    return {k: v for k, v in env.items() if k.startswith("MS_DEV_")}


def entry_size(entry: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(entry):
        for f in files:
            try:
                total += (Path(dirpath) / f).stat().st_size
            except OSError:
                pass
    return total


def remove_tree(path: Path) -> None:
    """Rename it out of the way first (readers see it whole or not at all), then delete."""
    trash = path.with_name(f"{TRASH}-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, trash)
    except OSError:
        return  # gone already, or another process is removing it
    shutil.rmtree(trash, ignore_errors=True)


def touch(entry: Path) -> None:
    """Mark `entry` used now (its mtime orders the least-recently-used cleanup)."""
    try:
        os.utime(entry)
    except OSError:
        pass


def cleanup(root: Path, max_bytes: int, keep: str = "", now: float | None = None) -> list[str]:
    """Delete the least recently used entries until the rest fit in `max_bytes` (never `keep`),
    and private copies of killed workers; the keys deleted."""
    now = time.time() if now is None else now
    work = root / WORK
    if work.is_dir():
        for d in work.iterdir():
            try:
                if now - d.stat().st_mtime > STALE_WORK_S:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass
    entries = []
    for d in root.iterdir() if root.is_dir() else ():
        if d.name.startswith(TRASH):
            shutil.rmtree(d, ignore_errors=True)
        elif not d.name.startswith(".") and d.is_dir():
            try:
                entries.append((d.stat().st_mtime, d, entry_size(d)))
            except OSError:
                pass
    total = sum(size for _, _, size in entries)
    removed = []
    for _, d, size in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if d.name == keep:
            continue
        remove_tree(d)
        total -= size
        removed.append(d.name)
    return removed
