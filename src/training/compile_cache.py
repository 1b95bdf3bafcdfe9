"""The worker's side of the compile cache (launcher/core/compile_cache.py says why and where).

:func:`session` is entered after the data is counted and before anything is compiled: it works
out the key of this run's graphs, copies that entry's graphs for this rank (if any) into a
private directory and points MindSpore's compile cache at it (MS_COMPILER_CACHE_ENABLE,
MS_COMPILER_CACHE_PATH; MindSpore reads the path at its first compile). After the first
training step and after the first evaluation (Graphs.keep_compiled, from src/train.py: a
restart after a later kill or failure reuses them), and again at a normal end (done, or
stopped on request), the graphs MindSpore wrote there go back into the entry, each file by an
atomic rename; the private directory goes either way.

MindSpore numbers a process's graphs in the order it compiles them and loads graph i for the
i-th compile, so the key holds everything that decides that order and the graphs' shapes: the
job keys (all but names, paths and launch settings), the image counts and steps per epoch,
the world size, the resume point (a resumed run may compile a different sequence), packrun's
worker sources and native kernels, MindSpore's version and its MS_DEV_* switches.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from launcher.core import compile_cache as store
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.names import LAST_CKPT, LAST_POINT
from launcher.core.spec import JobSpec, sharded_evaluation

MS_ENABLE = "MS_COMPILER_CACHE_ENABLE"
MS_PATH = "MS_COMPILER_CACHE_PATH"
GRAPHS = "graph_cache"   # MindSpore's sub-directory of rank_<r>
SRC = Path(__file__).resolve().parents[1]  # src/: the worker's code


@functools.lru_cache(maxsize=1)
def sources_digest() -> str:
    """Every file of the worker's code that can shape a graph: src/**/*.py and the kernels'
    C++ sources."""
    files = [p for p in SRC.rglob("*") if p.suffix in (".py", ".cc", ".h")
             and "build" not in p.relative_to(SRC).parts and p.is_file()]
    return store.files_digest(files, SRC)


def native_library(spec: JobSpec) -> str | None:
    """The native kernels' library, by its full path (its name's digest covers sources,
    compiler and CPU; a compiled graph calls the Custom ops by the library's absolute path, so
    a graph from another checkout's library of the same name would call a file that may be
    gone), None when this run does not use them."""
    if spec.device != "CPU" or spec.cpu_conv != "im2col":
        return None
    from src.native import kernels
    lib = kernels.library()
    return str(lib.resolve()) if lib else None


def resume_point(spec: JobSpec, run_dir: Path) -> object:
    """The point a resumed run starts from (last.json), None for a fresh start, and None
    whenever the data is not sunk into the graphs (CPU, or sink_mode off): then a resumed run
    compiles the same graphs in the same order (its first epoch is shorter, not different). A
    sinking run resumed mid-epoch compiles graphs for other sink sizes first, and MindSpore
    finds cached graphs by their order of compilation."""
    if spec.device == "CPU" or not spec.sink_mode or not (run_dir / LAST_CKPT).exists():
        return None
    try:
        return json.loads((run_dir / LAST_POINT).read_text())
    except (OSError, ValueError):
        return "unknown"


def key_parts(spec: JobSpec, run_dir: Path, world: int, counts: dict,
              env=os.environ) -> dict:
    import mindspore
    return {
        "mindspore": mindspore.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "sources": sources_digest(),
        "native": native_library(spec),
        # eval_mode as it acts: "auto" and "sharded" are one graph set with 2+ workers, and
        # with one worker all three evaluate in one process
        "spec": store.spec_part(spec.to_dict() | {
            "eval_mode": "sharded" if sharded_evaluation(spec.eval_mode, world) else "rank0"}),
        "data": counts,
        "world": world,
        "resume": resume_point(spec, run_dir),
        "env": store.env_part(env),  # (the job's own MS_* variables are in its spec part)
    }


class Graphs:
    """One worker's use of one entry: `reused` graphs copied in, `private` its copy."""

    def __init__(self, root: Path, key: str, rank: int, private: Path, max_bytes: int,
                 parts: dict, say):
        self.root, self.key, self.rank, self.private = root, key, rank, private
        self.entry, self.max_bytes = root / key, max_bytes
        self.parts, self.say = parts, say  # the key's parts (key.json); the run's say()
        # (size, mtime) of each file of `private` as the entry has it: copied in, or kept
        self.copied: dict[str, tuple[int, int]] = {}
        self.reused = 0
        self.kept = 0  # files this run has put into the entry
        self.kept_at: set[str] = set()  # the moments keep_compiled() has kept graphs at

    def copy_in(self) -> None:
        source = self.entry / f"rank_{self.rank}" / GRAPHS
        target = self.private / f"rank_{self.rank}" / GRAPHS
        target.mkdir(parents=True, mode=0o700)
        try:
            names = sorted(p.name for p in source.iterdir() if not p.name.startswith("."))
        except OSError:
            return
        try:
            for name in names:
                shutil.copy2(source / name, target / name)
                st = (target / name).stat()
                self.copied[f"rank_{self.rank}/{GRAPHS}/{name}"] = (st.st_size, st.st_mtime_ns)
        except OSError:  # the entry went (cleanup by another run): compile as if new
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True, mode=0o700)
            self.copied = {}
            return
        self.reused = sum(1 for n in names if n.endswith(".mindir"))
        store.touch(self.entry)

    def publish(self) -> int:
        """Copy the graphs MindSpore wrote (new or rewritten since they were copied in or last
        published) into the entry; how many."""
        written = 0
        for path in sorted(self.private.rglob("*")):
            if not path.is_file():
                continue
            rel = str(path.relative_to(self.private))
            st = path.stat()
            if self.copied.get(rel) == (st.st_size, st.st_mtime_ns):
                continue
            target = self.entry / rel
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
            self.copied[rel] = (st.st_size, st.st_mtime_ns)
            written += 1
        if written and not (self.entry / store.KEY_JSON).exists():
            write_atomic(self.entry / store.KEY_JSON,
                         json.dumps(self.parts, indent=1, sort_keys=True, default=str) + "\n")
        store.touch(self.entry)
        self.kept += written
        return written

    def keep(self) -> bool:
        """publish(), saying so the first time this run puts graphs into the entry (not when it
        reused them); a failure to write only warns (False): the run's outcome stands."""
        kept_before = self.kept
        try:
            written = self.publish()
        except OSError as e:
            _warn(f"could not keep this run's graphs in {self.entry}: {e.strerror or e}")
            return False
        if written and not kept_before and not self.reused:
            self.say(f"compile cache: kept this run's compiled graphs in {self.entry}")
        return True

    def keep_compiled(self, moment: str) -> None:
        """keep() once per `moment`: after the first training step (the train graph has compiled
        and run) and after the first evaluation (the evaluation graph too). A later attempt of
        this run, after a kill or a failure, and other runs of the same key starting meanwhile
        reuse them instead of compiling again (minutes on Ascend); a later call for the same
        moment does nothing. The run's end keeps what MindSpore writes after."""
        if moment not in self.kept_at:
            self.kept_at.add(moment)
            self.keep()


def _warn(message: str) -> None:
    print(f"packrun: warning: compile cache not used: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def session(spec: JobSpec, run_dir: Path, rank: int, world: int, counts: dict, say,
            env=os.environ):
    """Around everything the worker compiles: yields the Graphs in use, or None when the cache
    is off (PYNATIVE, opted out, an unsafe directory)."""
    before = {var: os.environ.get(var) for var in (MS_ENABLE, MS_PATH)}
    graphs = _open(spec, run_dir, rank, world, counts, say, env)
    if graphs is None:
        yield None
        return
    try:
        yield graphs
        if graphs.keep():
            try:
                store.cleanup(graphs.root, graphs.max_bytes, keep=graphs.key)
            except OSError as e:
                _warn(f"could not keep this run's graphs in {graphs.entry}: {e.strerror or e}")
    finally:
        shutil.rmtree(graphs.private, ignore_errors=True)
        for var, value in before.items():  # the process's environment as it was (an
            if value is None:              # in-process caller, e.g. a test, compiles on)
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _open(spec, run_dir, rank, world, counts, say, env):
    if not spec.graph_mode:
        return None
    settings = store.settings(env, spec.compile_cache)
    if settings.root is None:
        if spec.compile_cache and settings.why:
            say(f"compile cache: off ({settings.why})")
        return None
    why = store.prepare_root(settings.root)
    if why:
        _warn(why)
        return None
    parts = key_parts(spec, run_dir, world, counts, env)
    key = store.cache_key(parts)
    try:
        work = settings.root / store.WORK
        work.mkdir(mode=0o700, exist_ok=True)
        private = Path(tempfile.mkdtemp(prefix=f"{key}-{os.getpid()}-", dir=work))
        graphs = Graphs(settings.root, key, rank, private, settings.max_bytes, parts, say)
        graphs.copy_in()
    except OSError as e:
        _warn(f"{settings.root}: {e.strerror or e}")
        return None
    os.environ[MS_ENABLE] = "1"
    os.environ[MS_PATH] = str(private)
    # with several ranks, every rank says it in its own log (rank 0's reaches the console)
    tell = say if world == 1 else (lambda message: print(f"rank {rank}: {message}", flush=True))
    if graphs.reused:
        tell(f"compile cache: reusing {graphs.reused} compiled graph(s) of this network, shapes "
             f"and code ({graphs.entry})")
    else:
        tell(f"compile cache: no compiled graphs for this network, shapes and code yet "
             f"(key {key})")
    return graphs
