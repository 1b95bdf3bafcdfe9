"""The test tiers (tests/conftest.py): a test with no tier, or with two, stops the run at
collection, naming it; one tier passes."""

import re

import pytest

from tests.conftest import CLUSTERS, heavy_modules_first, pytest_collection_modifyitems

pytestmark = pytest.mark.unit


class Item:
    """What the hook reads of a collected test: its node id and its markers."""

    def __init__(self, nodeid: str, *markers: str | pytest.MarkDecorator):
        self.nodeid = nodeid
        self.markers = [(getattr(pytest.mark, m) if isinstance(m, str) else m).mark
                        for m in markers]

    def iter_markers(self):
        return iter(self.markers)

    def add_marker(self, marker):
        self.markers.append(marker.mark)


def test_one_tier_each_passes_and_each_cluster_has_one_xdist_group():
    items = [Item("t.py::unit", "unit"), Item("t.py::e2e", "e2e", "parametrize"),
             *(Item(f"t.py::{name}", pytest.mark.cluster(name)) for name in CLUSTERS)]
    pytest_collection_modifyitems(None, items)
    groups = {i.nodeid: [m.args for m in i.markers if m.name == "xdist_group"] for i in items}
    assert groups == {"t.py::unit": [], "t.py::e2e": [], "t.py::slurm": [("slurm_cluster",)],
                      "t.py::netns": [("netns_cluster",)]}


@pytest.mark.parametrize("mark, said", [
    ("cluster", "cluster()"), (pytest.mark.cluster("lab"), "cluster(lab)"),
    (pytest.mark.cluster("slurm", "netns"), "cluster(netns, slurm)")])
def test_a_cluster_test_that_does_not_name_one_known_cluster_stops_collection(mark, said):
    """Which cluster it uses decides which tests it may not run beside."""
    with pytest.raises(pytest.UsageError) as e:
        pytest_collection_modifyitems(None, [Item("t.py::fine", pytest.mark.cluster("slurm")),
                                             Item("t.py::c", mark)])
    assert f"t.py::c: {said}: name the one cluster the test uses: " \
           'cluster("slurm") for the single-node Slurm cluster' in str(e.value), str(e.value)
    assert "t.py::fine" not in str(e.value)


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
    item = Item("t.py::c", pytest.mark.cluster("netns"))
    item.add_marker(pytest.mark.xdist_group("shared_run"))
    with pytest.raises(pytest.UsageError, match=r"t\.py::c: cluster, in xdist group shared_run "
                                                r"\(a cluster test's only group is its "
                                                r"cluster's, 'netns_cluster'\)"):
        pytest_collection_modifyitems(None, [Item("t.py::e", "e2e"), item])
    again = Item("t.py::d", pytest.mark.cluster("netns"), pytest.mark.xdist_group("netns_cluster"))
    pytest_collection_modifyitems(None, [again])  # its own cluster's group: fine


def test_modules_with_training_tests_come_first_each_module_kept_together():
    items = [Item("a.py::u1", "unit"), Item("b.py::u", "unit"), Item("a.py::e", "e2e"),
             Item("c.py::c", pytest.mark.cluster("slurm")), Item("d.py::u", "unit"),
             Item("a.py::u2", "unit")]
    heavy_modules_first(items)
    assert [i.nodeid for i in items] == ["a.py::u1", "a.py::e", "a.py::u2", "c.py::c", "b.py::u",
                                         "d.py::u"]


def test_under_xdist_loadgroup_each_cluster_runs_on_one_worker_beside_the_other(tmp_path):
    """README's test command (-n 2 --dist loadgroup) keeps each cluster's tests on one worker:
    they share its daemons. The two clusters share nothing, so their tests run side by side, one
    cluster on each worker: xdist hands out the largest groups first. (pytest 9 broke xdist's
    groups; a version that does so again fails here.)"""
    import subprocess
    import sys

    from tests.helpers import packrun_env  # this checkout's tests/ on PYTHONPATH
    (tmp_path / "conftest.py").write_text(
        "import pytest\nfrom tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.unit\n@pytest.mark.parametrize('i', range(6))\n"
        "def test_u(i):\n    pass\n\n"
        "@pytest.mark.cluster('slurm')\n@pytest.mark.parametrize('i', range(6))\n"
        "def test_slurm(i):\n    pass\n\n"
        "@pytest.mark.cluster('netns')\n@pytest.mark.parametrize('i', range(6))\n"
        "def test_netns(i):\n    pass\n")
    # --basetemp: its own temporary directory, not the next numbered one under
    # /tmp/pytest-of-USER, whose creation deletes the oldest of those (seconds for a big one)
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                        "-p", "no:cacheprovider", "-p", "no:randomly", "-o",
                        "markers=unit\n  cluster", f"--basetemp={tmp_path / 'basetemp'}",
                        str(tmp_path)],
                       cwd=tmp_path, env=packrun_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    workers = {name: {m.group(1) for m in re.finditer(
        rf"^\[(gw\d)\] .* PASSED \S+::test_{name}\[", r.stdout, re.M)} for name in CLUSTERS}
    assert all(len(w) == 1 for w in workers.values()), r.stdout
    assert workers["slurm"] != workers["netns"], r.stdout
