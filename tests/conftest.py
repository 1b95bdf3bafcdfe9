"""Shared pytest fixtures and the test tiers.

Every test belongs to exactly one tier (README, "Run the tests"; setup.cfg registers them):
  unit     no MindSpore training, no daemons, no real workers: `python -m pytest -m unit`
  e2e      real workers, MindSpore training, real launchers (msrun, mpirun), and full-size
           networks built or compiled (seconds per test)
  cluster  Slurm daemons or the two-host network-namespace cluster
A file sets `pytestmark = pytest.mark.<tier>`; a file that mixes tiers marks each test instead.
A test with no tier, or with two, stops the run at collection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# The helpers and fixtures of tests/data_fixtures.py (digits_2class, tiny_job, data, make_job)
# for every test module, without an import.
pytest_plugins = ["tests.data_fixtures"]

TIERS = ("unit", "e2e", "cluster")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    wrong = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(tiers) or 'no tier'}")
        elif tiers == ["cluster"]:
            # one Slurm node and one two-host cluster for all of them: under pytest-xdist
            # (`-n 2 --dist loadgroup`, README's test command) they run on one worker, in turn.
            # xdist joins all of a test's group names into one, so a cluster test in a group of
            # its own (e.g. for a shared fixture) would leave the cluster's group: refused.
            others = sorted({str(m.args[0]) for m in item.iter_markers()
                             if m.name == "xdist_group" and m.args} - {"cluster"})
            if others:
                wrong.append(f"{item.nodeid}: cluster, in xdist group {', '.join(others)} "
                             "(a cluster test's only group is 'cluster')")
            item.add_marker(pytest.mark.xdist_group("cluster"))
    if wrong:
        raise pytest.UsageError("every test needs exactly one of the markers "
                                f"{', '.join(TIERS)} (tests/conftest.py):\n  " + "\n  ".join(wrong))


# --- the single-node Slurm test cluster (tests/cluster/slurm_up.sh) ---------------------------
# tests/test_multinode.py has a `cluster` of its own: the two-host network-namespace cluster.

START_CLUSTER = "bash tests/cluster/slurm_up.sh && source /tmp/packrun-slurm/env.sh"


def _slurm_problem() -> str | None:
    if not shutil.which("scontrol"):
        return "Slurm's commands are not installed (apt-get install slurm-client)"
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
    """A Slurm cluster that answers; skips the test without one (fails it in CI)."""
    problem = _slurm_problem()
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"{problem}; CI must start one first (.ci/run: {START_CLUSTER})")
    if problem:
        pytest.skip(f"{problem}; start one: {START_CLUSTER}")
