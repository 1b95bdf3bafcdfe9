"""The test tiers (tests/conftest.py): a test with no tier, or with two, stops the run at
collection, naming it; one tier passes."""

import re

import pytest

from tests.conftest import TIERS, pytest_collection_modifyitems

pytestmark = pytest.mark.unit


class Item:
    """What the hook reads of a collected test: its node id and its markers."""

    def __init__(self, nodeid: str, *markers: str):
        self.nodeid = nodeid
        self.markers = [getattr(pytest.mark, name).mark for name in markers]

    def iter_markers(self):
        return iter(self.markers)

    def add_marker(self, marker):
        self.markers.append(marker.mark)


def test_one_tier_each_passes_and_the_cluster_tier_shares_one_xdist_group():
    items = [Item(f"t.py::{t}", t, "parametrize") for t in TIERS]
    pytest_collection_modifyitems(None, items)
    groups = {i.nodeid: [m.args for m in i.markers if m.name == "xdist_group"] for i in items}
    assert groups == {"t.py::unit": [], "t.py::e2e": [], "t.py::cluster": [("cluster",)]}


@pytest.mark.parametrize("markers, said", [((), "no tier"), (("unit", "e2e"), "e2e, unit"),
                                           (("skipif",), "no tier")])
def test_no_tier_or_two_stop_collection_naming_the_test(markers, said):
    items = [Item("t.py::fine", "unit"), Item("t.py::wrong", *markers)]
    with pytest.raises(pytest.UsageError, match=r"exactly one of the markers unit, e2e, cluster") \
            as e:
        pytest_collection_modifyitems(None, items)
    assert f"t.py::wrong: {said}" in str(e.value) and "t.py::fine" not in str(e.value)


def test_a_cluster_test_in_another_xdist_group_stops_collection():
    """xdist would run it in a group named 'cluster_<other>', apart from the cluster tier."""
    item = Item("t.py::c", "cluster")
    item.add_marker(pytest.mark.xdist_group("shared_run"))
    with pytest.raises(pytest.UsageError, match=r"t\.py::c: cluster, in xdist group shared_run"):
        pytest_collection_modifyitems(None, [Item("t.py::e", "e2e"), item])


def test_under_xdist_loadgroup_every_cluster_test_runs_on_one_worker(tmp_path):
    """README's test command (-n 2 --dist loadgroup) keeps the cluster tier on one worker:
    they share one Slurm node and one two-host cluster. (pytest 9 broke xdist's groups; a
    version that does so again fails here.)"""
    import subprocess
    import sys

    from tests.helpers import packrun_env  # this checkout's tests/ on PYTHONPATH
    (tmp_path / "conftest.py").write_text(
        "import pytest\nfrom tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.cluster\n@pytest.mark.parametrize('i', range(6))\n"
        "def test_c(i):\n    pass\n\n"
        "@pytest.mark.unit\n@pytest.mark.parametrize('i', range(6))\n"
        "def test_u(i):\n    pass\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                        "-p", "no:cacheprovider", "-p", "no:randomly", "-o",
                        "markers=unit\n  cluster", str(tmp_path)],
                       cwd=tmp_path, env=packrun_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    workers = {m.group(1) for m in re.finditer(r"^\[(gw\d)\] .* PASSED \S+::test_c\[", r.stdout,
                                               re.M)}
    assert len(workers) == 1, r.stdout
