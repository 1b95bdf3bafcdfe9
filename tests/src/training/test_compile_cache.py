"""The worker's side of the compile cache: the key of a run's graphs, the private copy MindSpore
works in, and publishing its graphs back. MindSpore itself is played by writing the files it
writes (rank_<r>/graph_cache/...) into MS_COMPILER_CACHE_PATH; the e2e tests at the end run the
real thing: a debug run and two msrun ranks, each run again from the cache."""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from pathlib import Path

import pytest

from launcher.core import compile_cache as store
from launcher.core.rundir.names import (
    COMPILE_CACHE_DIR_ENV,
    COMPILE_CACHE_ENV,
    FAULT_ENV,
    LAST_CKPT,
    LAST_POINT,
)
from launcher.core.spec import JobSpec
from src.training import compile_cache
from tests.helpers import digests, need_tool, packrun, run_dir_of, shown, write_tiny_job

SPEC = dataclasses.replace(JobSpec(), cpu_conv="native")  # no native library to build here
COUNTS = {"train_images": 16, "steps": 2, "val_images": 4}


@pytest.fixture
def env(tmp_path, monkeypatch):
    names = (compile_cache.MS_ENABLE, compile_cache.MS_PATH)
    before = {name: os.environ.get(name) for name in names}
    for name in names:
        monkeypatch.delenv(name, raising=False)
    yield {"HOME": str(tmp_path / "home"), COMPILE_CACHE_DIR_ENV: str(tmp_path / "cache")}
    # Sessions in the threads of one test each restore what they found, and a thread can find
    # another's values: put back what the process had, or a later in-process compile on this
    # pytest-xdist worker would use MindSpore's compile cache (which then hashes the entry
    # script, "-c", and fails).
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def compile_graphs(path: Path, rank: int, n: int, tag: bytes = b"graph") -> None:
    """What MindSpore does at its compiles: write the graphs under the path it was given
    (MS_COMPILER_CACHE_PATH; the threads below share one environment, so it is passed)."""
    d = path / f"rank_{rank}" / "graph_cache"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"compile_cache_{i}.mindir").write_bytes(tag + bytes([i]))
    (d / "compile_dependency.hash").write_text("abc")


def run(tmp_path, env, said, rank=0, world=1, spec=SPEC, graphs=2, fail=False):
    with compile_cache.session(spec, tmp_path, rank, world, COUNTS, said.append, env) as g:
        if g is not None:
            compile_graphs(g.private, rank, graphs)
        if fail:
            raise RuntimeError("worker failed")
    return g


@pytest.mark.unit
def test_a_repeated_run_reuses_the_graphs_of_the_first(tmp_path, env):
    said: list = []
    first = run(tmp_path, env, said)
    assert said[0].startswith("compile cache: no compiled graphs for this network, shapes and "
                              f"code yet (key {first.key})")
    assert said[1] == f"compile cache: kept this run's compiled graphs in {first.entry}"
    assert not first.private.exists()  # the private copy goes
    said.clear()
    with compile_cache.session(SPEC, tmp_path, 0, 1, COUNTS, said.append, env) as again:
        assert again.key == first.key and again.reused == 2
        assert os.environ[compile_cache.MS_ENABLE] == "1"
        private = Path(os.environ[compile_cache.MS_PATH])
        assert private == again.private and private.parent == first.root / store.WORK
        assert (private / "rank_0/graph_cache/compile_cache_1.mindir").read_bytes() == \
            b"graph\x01"
    assert said == [("compile cache: reusing 2 compiled graph(s) of this network, shapes and "
                     f"code ({first.entry})")]
    assert (first.entry / store.KEY_JSON).is_file()


@pytest.mark.unit
def test_what_mindspore_adds_to_a_reused_entry_is_kept(tmp_path, env):
    run(tmp_path, env, [], graphs=1)  # a run stopped before its evaluation compiled
    g = run(tmp_path, env, [], graphs=3)
    assert g.reused == 1
    assert sorted(p.name for p in (g.entry / "rank_0/graph_cache").iterdir()) == [
        "compile_cache_0.mindir", "compile_cache_1.mindir", "compile_cache_2.mindir",
        "compile_dependency.hash"]


@pytest.mark.unit
def test_ranks_keep_their_own_graphs_and_runs_at_once_never_leave_half_files(tmp_path, env):
    errors = []

    def rank(r):
        try:
            for _ in range(5):
                run(tmp_path, env, [], rank=r, world=2, graphs=4)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    root = Path(env[COMPILE_CACHE_DIR_ENV])
    (entry,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert sorted(p.name for p in entry.iterdir()) == [store.KEY_JSON, "rank_0", "rank_1"]
    files = sorted(p for p in entry.rglob("*") if p.is_file())
    assert not [p for p in files if p.name.startswith(".")]  # no temporary file left
    assert (entry / "rank_1/graph_cache/compile_cache_3.mindir").read_bytes() == b"graph\x03"
    assert not list((root / store.WORK).iterdir())


@pytest.mark.unit
def test_a_failed_run_publishes_nothing(tmp_path, env):
    with pytest.raises(RuntimeError):
        run(tmp_path, env, [], fail=True)
    root = Path(env[COMPILE_CACHE_DIR_ENV])
    assert [p.name for p in root.iterdir()] == [store.WORK]
    assert not list((root / store.WORK).iterdir())


@pytest.mark.unit
def test_graphs_kept_at_the_first_step_and_evaluation_stay_when_the_run_fails_after(tmp_path,
                                                                                   env):
    """The worker keeps its graphs after its first step and once its first evaluation has run
    (src/train.py); a failure after that leaves them for the restart. What MindSpore writes
    later goes in at the end of a run that ends normally, and the run says it kept graphs
    once."""
    said: list = []
    with pytest.raises(RuntimeError):
        with compile_cache.session(SPEC, tmp_path, 0, 1, COUNTS, said.append, env) as g:
            compile_graphs(g.private, 0, 1)
            g.keep_compiled("step")
            kept = sorted(p.name for p in (g.entry / "rank_0" / compile_cache.GRAPHS).iterdir())
            assert kept == ["compile_cache_0.mindir", "compile_dependency.hash"]
            compile_graphs(g.private, 0, 2)
            g.keep_compiled("step")  # once per moment
            assert not (g.entry / "rank_0" / compile_cache.GRAPHS / "compile_cache_1.mindir") \
                .exists()
            g.keep_compiled("evaluation")
            raise RuntimeError("worker failed in its second epoch")
    names = sorted(p.name for p in (g.entry / "rank_0" / compile_cache.GRAPHS).iterdir())
    assert names == ["compile_cache_0.mindir", "compile_cache_1.mindir", "compile_dependency.hash"]
    assert said[1:] == [f"compile cache: kept this run's compiled graphs in {g.entry}"]
    said.clear()
    with compile_cache.session(SPEC, tmp_path, 0, 1, COUNTS, said.append, env) as again:
        assert again.reused == 2
        compile_graphs(again.private, 0, 3)  # a third graph, compiled after the evaluation
        again.keep_compiled("evaluation")
    assert len(list((g.entry / "rank_0" / compile_cache.GRAPHS).glob("*.mindir"))) == 3
    assert not [m for m in said if m.startswith("compile cache: kept")]  # reused: nothing new


def key(tmp_path, env, spec=SPEC, world=1, counts=COUNTS):
    return store.cache_key(compile_cache.key_parts(spec, tmp_path, world, counts, env))


@pytest.mark.unit
def test_the_key_changes_with_shapes_code_kernels_mindspore_and_the_resume_point(
        tmp_path, env, monkeypatch):
    import mindspore
    base = key(tmp_path, env)
    assert key(tmp_path, env, dataclasses.replace(SPEC, name="x", train_dir="/y")) == base
    # the world size counts, not how it is spread over nodes (the worker never reads them)
    two = key(tmp_path, env, world=2)
    assert key(tmp_path, env, dataclasses.replace(SPEC, nodes=2, cards_per_node=1), world=2) == \
        key(tmp_path, env, dataclasses.replace(SPEC, nodes=1, cards_per_node=2), world=2) == two
    changed = {
        "image size": key(tmp_path, env, dataclasses.replace(SPEC, image_size=64)),
        "world": key(tmp_path, env, world=2),
        "val images": key(tmp_path, env, counts=COUNTS | {"val_images": 5}),
        "MS_DEV_*": key(tmp_path, env | {"MS_DEV_GRAPH_KERNEL_FLAGS": "--opt_level=1"}),
    }
    (tmp_path / LAST_CKPT).write_text("")
    (tmp_path / LAST_POINT).write_text('{"epoch": 1, "step": 0}')
    # a resumed run whose data is sunk into the graphs (Ascend/GPU) compiles other graphs first;
    # on CPU, or without sink mode, it compiles the same ones in the same order
    sinking = dataclasses.replace(SPEC, device="Ascend", sink_mode=True)
    not_sinking = dataclasses.replace(sinking, sink_mode=False)
    assert key(tmp_path, env) == base
    resumed_not_sinking = key(tmp_path, env, not_sinking)
    changed["resume, sinking"] = key(tmp_path, env, sinking)
    (tmp_path / LAST_CKPT).unlink()
    changed["sinking, fresh"] = key(tmp_path, env, sinking)
    assert key(tmp_path, env, not_sinking) == resumed_not_sinking
    monkeypatch.setattr(mindspore, "__version__", "9.9.9")
    changed["mindspore"] = key(tmp_path, env)
    monkeypatch.undo()
    monkeypatch.setattr(compile_cache, "sources_digest", lambda: "edited")
    changed["sources"] = key(tmp_path, env)
    monkeypatch.setattr(compile_cache, "native_library", lambda spec: "/a/packrun-native-x.so")
    changed["native kernels"] = key(tmp_path, env)
    # the same library in another checkout: a cached graph calls the ops by the absolute path
    monkeypatch.setattr(compile_cache, "native_library", lambda spec: "/b/packrun-native-x.so")
    changed["native kernels elsewhere"] = key(tmp_path, env)
    assert len(set(changed.values()) | {base}) == len(changed) + 1, changed


@pytest.mark.unit
def test_the_key_holds_eval_mode_as_it_acts(tmp_path, env):
    """"auto" is "sharded" with 2+ workers (one set of graphs), "rank0" is another; with one
    worker all three evaluate in one process."""
    def with_mode(mode, world):
        return key(tmp_path, env, dataclasses.replace(SPEC, eval_mode=mode), world=world)
    assert with_mode("auto", 2) == with_mode("sharded", 2) != with_mode("rank0", 2)
    assert with_mode("auto", 1) == with_mode("sharded", 1) == with_mode("rank0", 1)


@pytest.mark.unit
def test_the_sources_digest_covers_the_worker_and_its_kernels():
    parts = {p.relative_to(compile_cache.SRC).as_posix()
             for p in compile_cache.SRC.rglob("*") if p.suffix in (".py", ".cc", ".h")}
    assert {"model/resnet.py", "native/winograd.cc", "native/parallel.h", "train.py"} <= parts
    assert len(compile_cache.sources_digest()) == 64


@pytest.mark.unit
def test_off_in_pynative_by_the_job_or_the_variable_and_mindspore_is_not_told(tmp_path, env):
    for spec, extra, said_off in ((dataclasses.replace(SPEC, graph_mode=False), {}, []),
                                  (dataclasses.replace(SPEC, compile_cache=False), {}, []),
                                  (SPEC, {COMPILE_CACHE_ENV: "0"},
                                   [f"compile cache: off ({COMPILE_CACHE_ENV}=0)"])):
        said: list = []
        assert run(tmp_path, env | extra, said, spec=spec) is None
        assert said == said_off
        assert compile_cache.MS_PATH not in os.environ
    assert not Path(env[COMPILE_CACHE_DIR_ENV]).exists()


@pytest.mark.unit
def test_an_unsafe_directory_is_not_used(tmp_path, env, capsys):
    root = Path(env[COMPILE_CACHE_DIR_ENV])
    root.mkdir(mode=0o700)
    root.chmod(0o777)
    assert run(tmp_path, env, []) is None
    assert "packrun: warning: compile cache not used: " in capsys.readouterr().err
    assert compile_cache.MS_PATH not in os.environ and not list(root.iterdir())


# --- the real thing ----------------------------------------------------------------------------

REUSED = re.compile(r"compile cache: reusing (\d+) compiled graph\(s\) of this network")


def weights(run_dir: Path) -> str:
    return FINAL.search((run_dir / "logs" / "worker_0.log").read_text()).group(1)


FINAL = re.compile(r"rank 0: final weights sha256 (\w+, batchnorm statistics sha256 \w+)")


@pytest.mark.e2e
def test_a_repeated_debug_run_reuses_the_graphs_with_identical_results(tmp_path, digits_2class):
    job = write_tiny_job(tmp_path / "cc.toml", digits_2class, epochs=2)
    cache = {COMPILE_CACHE_DIR_ENV: str(tmp_path / "cache")}
    # the first run fails in its first epoch, before any evaluation, and is restarted: the
    # train graph was kept after the first step, so its second attempt already reuses it
    runs = [packrun("debug", job, "--max_restarts=1",
                    env_extra=cache | {FAULT_ENV: "raise:rank=0:epoch=1:step=2"})]
    runs.append(packrun("debug", job, env_extra=cache))
    assert all(r.returncode == 0 for r in runs), shown(runs[0]) + shown(runs[1])
    logs = run_dir_of(runs[0]) / "logs"
    first, second = ((logs / f"attempt_{n}" / "worker_0.log").read_text() for n in (1, 2))
    assert "compile cache: no compiled graphs for this network, shapes and code yet" in first
    assert "compile cache: kept this run's compiled graphs" in first
    assert first.index("compile cache: kept") < first.index("injected failure at epoch 1")
    assert "val Acc" not in first  # (it failed before evaluating)
    assert REUSED.search(second), second
    m = REUSED.search(runs[1].stdout)
    assert m and int(m.group(1)) >= 2, shown(runs[1])  # the train and the eval graph
    assert weights(run_dir_of(runs[0])) == weights(run_dir_of(runs[1]))
    # another lr, now a warmed-up cosine schedule, and another momentum: the same graphs (on
    # CPU the host sets each step's rate in a Parameter, the momentum is one), and the same
    # weights as that job with the cache off (MindSpore compiling as it always did)
    other = write_tiny_job(tmp_path / "cc_lr.toml", digits_2class, lr=0.05, epochs=2,
                           lr_schedule="cosine", warmup_epochs=1, momentum=0.8)
    reused = packrun("debug", other, env_extra=cache)
    def cache_files():
        return sorted(p.relative_to(tmp_path) for p in (tmp_path / "cache").rglob("*"))
    kept = cache_files()
    off = packrun("debug", other, "--compile_cache=false", env_extra=cache)
    assert reused.returncode == 0 and off.returncode == 0, shown(reused) + shown(off)
    assert REUSED.search(reused.stdout), shown(reused)
    # off: nothing read or kept, nothing said
    assert "compile cache" not in off.stdout
    assert cache_files() == kept
    assert weights(run_dir_of(reused)) == weights(run_dir_of(off))
    assert weights(run_dir_of(reused)) != weights(run_dir_of(runs[0]))


@pytest.mark.e2e
def test_two_msrun_ranks_keep_and_reuse_their_own_graphs(tmp_path, digits_2class):
    job = write_tiny_job(tmp_path / "cc2.toml", digits_2class, num_parallel_workers=1)
    cache = {COMPILE_CACHE_DIR_ENV: str(tmp_path / "cache")}
    found = []
    for _ in range(2):
        r = packrun("run", job, "--launcher=msrun", "--workers=2", env_extra=cache)
        assert r.returncode == 0, shown(r)
        found.append(digests(run_dir_of(r)))
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert sorted(p.name for p in entry.glob("rank_*")) == ["rank_0", "rank_1"]
    for rank in (0, 1):
        log = (run_dir_of(r) / "logs" / f"worker_{rank}.log").read_text()
        assert f"rank {rank}: compile cache: reusing" in log  # every rank says so in its log
    assert found[0] == found[1] and found[0][0] == found[0][1]
    # the launcher is not in the key: mpirun's ranks start the same graphs, reuse msrun's and
    # end with the same weights
    need_tool("mpirun", "to launch the two workers with Open MPI")
    r = packrun("run", job, "--launcher=mpirun", "--workers=2", env_extra=cache)
    assert r.returncode == 0, shown(r)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == \
        [entry.name]
    for rank in (0, 1):
        log = (run_dir_of(r) / "logs" / f"worker_{rank}.log").read_text()
        assert f"rank {rank}: compile cache: reusing" in log
    assert digests(run_dir_of(r)) == found[0]
