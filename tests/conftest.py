"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from tests.data_fixtures import write_job


# --- job files (launcher tests: render, rank tables) ----------------------------------------
# `make_job(name="demo", **keys)` writes <tmp>/<name>.toml whose train_dir / val_dir exist (two
# empty class folders each) and whose output_dir is <tmp>/runs, and returns its path; `keys`
# add or override job keys (Python str / int / float / bool values).

@pytest.fixture
def make_job(tmp_path):
    def make(name: str = "demo", **keys):
        data = tmp_path / "data"
        for split in ("train", "val"):
            for cls in ("cat", "dog"):
                (data / split / cls).mkdir(parents=True, exist_ok=True)
        values = {"name": name, "train_dir": str(data / "train"), "val_dir": str(data / "val"),
                  "output_dir": str(tmp_path / "runs")} | keys
        return write_job(tmp_path / f"{name}.toml", **values)
    return make
