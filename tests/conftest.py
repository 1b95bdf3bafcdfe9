"""The shared pytest fixtures and the test tiers. (The shared helpers are in tests/helpers.py.)

Every test belongs to exactly one tier (README, "Run the tests"; setup.cfg registers them):
  unit     no MindSpore training or GRAPH_MODE compilation, no daemons, no real workers:
           `python -m pytest -m unit`
  e2e      real workers, MindSpore training, real launchers (msrun, mpirun), full-size
           networks built, and GRAPH_MODE compilations (seconds per test)
  cluster  Slurm daemons or the two-host network-namespace cluster: `cluster("slurm")` or
           `cluster("netns")`, the one it uses (CLUSTERS below)
A file sets `pytestmark = pytest.mark.<tier>`; a file that mixes tiers marks each test instead.
A test with no tier, or with two, stops the run at collection.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.core.rundir.names import COMPILE_CACHE_DIR_ENV
from launcher.demo.digits_data import export_digits
from tests.helpers import (
    HCCN_CONF,
    need_tool,
    session_dir,
    shared_run,
    unavailable,
    write_job,
    write_tiny_job,
)

TIERS = ("unit", "e2e", "cluster")


# The test clusters, by the name a `cluster` test gives its marker (`pytest.mark.cluster("slurm")`):
# each is one shared set of daemons, so its tests run in turn, on one xdist worker (its group).
# The two share nothing (own state directories, ports, munge sockets: tests/cluster/
# netns_common.sh), so under `-n 3 --dist loadgroup` (README's test command) they run side by
# side, on two of the workers: the sum of each cluster's tests, not of all of them, is a floor
# under the suite's wall time. (pytest-xdist hands out its largest groups first: these two.)
CLUSTERS = {
    "slurm": "the single-node Slurm cluster (tests/cluster/slurm_up.sh)",
    "netns": "the two-host network-namespace cluster (tests/cluster/netns_up.sh)",
}


def cluster_group(name: str) -> str:
    """The xdist group of the tests of cluster `name`."""
    return f"{name}_cluster"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    wrong = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(tiers) or 'no tier'}")
        elif tiers == ["cluster"]:
            names = {str(a) for m in item.iter_markers() if m.name == "cluster" for a in m.args}
            if len(names) != 1 or not names <= CLUSTERS.keys():
                wrong.append(f"{item.nodeid}: cluster({', '.join(sorted(names))}): name the one "
                             "cluster the test uses: " + ", ".join(
                                 f'cluster("{n}") for {what}' for n, what in CLUSTERS.items()))
                continue
            group = cluster_group(names.pop())
            # xdist joins all of a test's group names into one, so a cluster test in a group of
            # its own (e.g. for a shared fixture) would leave its cluster's group: refused.
            others = sorted({str(m.args[0]) for m in item.iter_markers()
                             if m.name == "xdist_group" and m.args} - {group})
            if others:
                wrong.append(f"{item.nodeid}: cluster, in xdist group {', '.join(others)} "
                             f"(a cluster test's only group is its cluster's, '{group}')")
            item.add_marker(pytest.mark.xdist_group(group))
    if wrong:
        raise pytest.UsageError("every test needs exactly one of the markers "
                                f"{', '.join(TIERS)} (tests/conftest.py):\n  " + "\n  ".join(wrong))
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker collects the same order
        heavy_modules_first(items)


def heavy_modules_first(items) -> None:
    """Put the modules that hold an `e2e` or `cluster` test before the modules of `unit` tests
    only, each module's tests kept together and in order (its module fixtures are built once).
    Under `--dist loadgroup`, xdist hands out its groups largest first and then single tests in
    collection order, each worker taking the next when it has two left: with the training
    tests last (tests/src/ sorts after tests/launcher/), one worker could still be in a 40 s
    test while the others had nothing left to take. Ending on a thousand sub-second unit tests,
    the workers finish within a second of each other: 20-35 s less idle at the end in a
    replay of the last four rehearsals' durations with xdist's scheduling."""
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    heavy = {path for path, tests in modules.items()
             if any(m.name in ("e2e", "cluster") for t in tests for m in t.iter_markers())}
    items[:] = [t for path in sorted(modules, key=lambda p: p not in heavy) for t in modules[path]]


# --- MindSpore's execution mode ----------------------------------------------------------------

@contextlib.contextmanager
def mindspore_mode_kept():
    """MindSpore's execution mode (GRAPH_MODE or PYNATIVE_MODE) is process-wide: a test that sets
    it and does not set it back changes the tests that run after it in the same pytest worker,
    which xdist picks differently each run (a GradOperation over a closure compiles in
    GRAPH_MODE and fails; in PYNATIVE_MODE it runs). The mode is set back after every test;
    MindSpore is not imported for it (a test that imported it found PYNATIVE_MODE, its
    default)."""
    ms = sys.modules.get("mindspore")
    before = ms.get_context("mode") if ms is not None else None
    try:
        yield
    finally:
        ms = sys.modules.get("mindspore")
        if ms is not None:
            wanted = ms.PYNATIVE_MODE if before is None else before
            if ms.get_context("mode") != wanted:
                ms.set_context(mode=wanted)


@pytest.fixture(autouse=True)
def _mindspore_mode_kept():
    with mindspore_mode_kept():
        yield


# --- the compile cache ---------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def compile_cache_dir(tmp_path_factory):
    """One compile cache for the whole session, shared by the pytest-xdist workers, set the way
    a user sets it (PACKRUN_COMPILE_CACHE_DIR): every worker a test starts inherits it, tests of
    the same network, shapes and data counts reuse each other's compiled graphs, and no test
    writes into ~/.cache. Tests of the cache itself point it elsewhere."""
    shared = session_dir(tmp_path_factory)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(COMPILE_CACHE_DIR_ENV, str(shared / "compile-cache"))
        yield shared / "compile-cache"


# --- data and job files --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def digits_2class(tmp_path_factory) -> Path:
    """<root>/{train,val}/digit_{0,1}/*.jpg: 24 train and 8 val images per class, 32 px."""
    root = tmp_path_factory.mktemp("digits2")
    export_digits(root, [0, 1], size=32, train_per_class=24, val_fraction=0.1, val_per_class=8)
    return root


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, digits_2class):
    """`reference_run(mode, *flags, env_extra=None, **keys)`: the run directory of `packrun MODE
    JOB FLAGS` for JOB = write_tiny_job(digits_2class, **keys) (tests/helpers.shared_run), trained
    once per session and shared by every module and pytest-xdist worker that asks for the same
    mode, flags, environment and keys: the uninterrupted runs the tests that interrupt one
    compare with. Read only: copy it to change it."""
    return functools.partial(shared_run, session_dir(tmp_path_factory), digits_2class)


@pytest.fixture
def tiny_job(tmp_path, digits_2class) -> Path:
    """<tmp_path>/tiny.toml: write_tiny_job on digits_2class, two epochs."""
    return write_tiny_job(tmp_path / "tiny.toml", digits_2class, epochs=2)


@pytest.fixture
def data(tmp_path, digits_2class) -> Path:
    """A private, writable copy of digits_2class, for tests that break it."""
    root = tmp_path / "data"
    shutil.copytree(digits_2class, root)
    return root


@pytest.fixture
def make_job(tmp_path):
    """`make_job(name="demo", **keys)` writes <tmp>/<name>.toml whose train_dir / val_dir exist
    (two empty class folders each) and whose output_dir is <tmp>/runs, and returns its path;
    `keys` add or override job keys (Python str / int / float / bool values). For launcher
    tests that render or check but never train."""
    def make(name: str = "demo", **keys):
        data = tmp_path / "data"
        for split in ("train", "val"):
            for cls in ("cat", "dog"):
                (data / split / cls).mkdir(parents=True, exist_ok=True)
        values = {"name": name, "train_dir": str(data / "train"), "val_dir": str(data / "val"),
                  "output_dir": str(tmp_path / "runs")} | keys
        return write_job(tmp_path / f"{name}.toml", **values)
    return make


@pytest.fixture
def hccn_conf(tmp_path) -> Path:
    """<tmp_path>/hccn.conf: HCCN_CONF, an 8-card Ascend server's."""
    path = tmp_path / "hccn.conf"
    path.write_text(HCCN_CONF)
    return path


@pytest.fixture(params=[pytest.param("graph", marks=pytest.mark.e2e),
                        pytest.param("pynative", marks=pytest.mark.unit)])
def mode(request):
    """Run the test in MindSpore's GRAPH_MODE and in PYNATIVE_MODE (set back after it, as after
    every test: mindspore_mode_kept; MindSpore is imported only by the tests that take this
    fixture). The tier comes from
    here: a graph compiles for seconds (e2e), the same check op by op takes a fraction of one
    (unit), so a test that takes this fixture carries no tier mark of its own."""
    import mindspore as ms
    ms.set_context(mode={"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}[request.param])
    return request.param


# --- the single-node Slurm test cluster (tests/cluster/slurm_up.sh) ---------------------------
# tests/launcher/slurm/test_multinode.py has a `cluster` of its own: the two-host
# network-namespace cluster.

START_CLUSTER = "bash tests/cluster/slurm_up.sh && source /tmp/packrun-slurm/env.sh"


def _slurm_problem() -> str | None:
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return f"SLURM_CONF is {conf}, which is not a file"
    try:
        r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`scontrol ping` gave no answer in 30 s"
    if r.returncode != 0 or " is UP" not in r.stdout:
        said = (r.stdout + r.stderr).strip().splitlines()
        return f"no Slurm cluster answers `scontrol ping` ({said[-1] if said else 'no output'})"
    return None


@pytest.fixture(scope="module")
def cluster():
    """A Slurm cluster that answers; skips the test without one (fails it in CI, whose .ci/run
    starts one)."""
    need_tool("scontrol", "to ask the Slurm test cluster")
    problem = _slurm_problem()
    if problem:
        unavailable(f"{problem}; start one: {START_CLUSTER}")
