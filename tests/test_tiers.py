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


def test_one_tier_each_passes():
    pytest_collection_modifyitems(None, [Item(f"t.py::{t}", t, "parametrize") for t in TIERS])


@pytest.mark.parametrize("markers, said", [((), "no tier"), (("unit", "e2e"), "e2e, unit"),
                                           (("skipif",), "no tier")])
def test_no_tier_or_two_stop_collection_naming_the_test(markers, said):
    items = [Item("t.py::fine", "unit"), Item("t.py::wrong", *markers)]
    with pytest.raises(pytest.UsageError, match=r"exactly one of the markers unit, e2e, cluster") \
            as e:
        pytest_collection_modifyitems(None, items)
    assert f"t.py::wrong: {said}" in str(e.value) and "t.py::fine" not in str(e.value)
