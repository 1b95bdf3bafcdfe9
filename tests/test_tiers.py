"""The test tiers (tests/conftest.py): a test with no tier, or with two, stops the run at
collection, naming it; one tier passes."""

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
