"""Tests do not leak process-wide state into the tests that run after them in the same pytest
worker (tests/conftest.py): which tests those are changes from run to run under xdist."""

import pytest

from tests.conftest import mindspore_mode_kept

pytestmark = pytest.mark.unit


def test_a_mode_a_test_sets_is_set_back_after_it(request):
    import mindspore as ms
    assert "_mindspore_mode_kept" in request.fixturenames  # every test, without asking
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
    with mindspore_mode_kept():
        ms.set_context(mode=ms.GRAPH_MODE)
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
    with pytest.raises(RuntimeError), mindspore_mode_kept():  # also when the test fails
        ms.set_context(mode=ms.GRAPH_MODE)
        raise RuntimeError
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
