"""launcher/core/paths.py: the repository root, and the environment a child that imports this
checkout gets (the lifeline's watcher, workers, sweep points, demo runs, the scheduler's waker)."""

import os

import pytest

from launcher.core.paths import REPO, importable

pytestmark = pytest.mark.unit


def test_importable_puts_the_checkout_first_and_keeps_the_rest():
    env = importable({"PYTHONPATH": "/site/extra", "HOME": "/h"})
    assert env == {"PYTHONPATH": f"{REPO}{os.pathsep}/site/extra", "HOME": "/h"}
    assert importable({})["PYTHONPATH"] == str(REPO)  # no empty entry (the current directory)


def test_importable_copies_this_process_environment_without_changing_it(monkeypatch):
    monkeypatch.setenv("PACKRUN_TEST_MARK", "1")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = importable()
    assert env["PACKRUN_TEST_MARK"] == "1" and env["PYTHONPATH"] == str(REPO)
    assert "PYTHONPATH" not in os.environ
