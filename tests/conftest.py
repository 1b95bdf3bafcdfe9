"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


# --- job files (launcher tests: render, rank tables) ----------------------------------------
# `make_job(name="demo", **keys)` writes <tmp>/<name>.toml whose train_dir / val_dir exist (two
# empty class folders each) and whose output_dir is <tmp>/runs, and returns its path; `keys`
# add or override job keys (Python str / int / float / bool values).

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def make_job(tmp_path):
    def make(name: str = "demo", **keys):
        data = tmp_path / "data"
        for split in ("train", "val"):
            for cls in ("cat", "dog"):
                (data / split / cls).mkdir(parents=True, exist_ok=True)
        values = {"name": name, "train_dir": str(data / "train"), "val_dir": str(data / "val"),
                  "output_dir": str(tmp_path / "runs")} | keys
        path = tmp_path / f"{name}.toml"
        path.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()),
                        encoding="utf-8")
        return path
    return make
