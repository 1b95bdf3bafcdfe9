"""Test data: tiny ImageFolders of real JPEGs (scikit-learn's digit scans, upscaled) and job files
that point at them. Session-scoped: exported once per test run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from launcher.digits import export_digits


def write_job(path: Path, **keys) -> Path:
    """A flat TOML job file from keyword arguments (strings quoted, bools lower-case)."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    path.write_text("".join(f"{k} = {fmt(v)}\n" for k, v in keys.items()))
    return path


@pytest.fixture(scope="session")
def digits_2class(tmp_path_factory) -> Path:
    """<root>/{train,val}/digit_{0,1}/*.jpg: 24 train and 8 val images per class, 32 px."""
    root = tmp_path_factory.mktemp("digits2")
    export_digits(root, [0, 1], size=32, train_per_class=24, val_fraction=0.1, val_per_class=8)
    return root


@pytest.fixture
def tiny_job(tmp_path, digits_2class) -> Path:
    """A job file for a seconds-long CPU run on digits_2class (resnet18, 32 px)."""
    return write_job(
        tmp_path / "tiny.toml", name="tiny", arch="resnet18", num_classes=2,
        train_dir=str(digits_2class / "train"), val_dir=str(digits_2class / "val"),
        image_size=32, batch_size=8, epochs=2, lr=0.01, device="CPU",
        output_dir=str(tmp_path / "runs"), min_crop_scale=0.5, hflip=False,
        num_parallel_workers=2)


@pytest.fixture
def data(tmp_path, digits_2class) -> Path:
    """A private, writable copy of digits_2class, for tests that break it."""
    root = tmp_path / "data"
    shutil.copytree(digits_2class, root)
    return root


def small_job(tmp_path: Path, data: Path, name: str = "small", **extra) -> Path:
    """<tmp_path>/job.toml: resnet18, 32 px, one epoch on `data`; `extra` adds or overrides."""
    keys = dict(name=name, arch="resnet18", num_classes=2, train_dir=str(data / "train"),
                val_dir=str(data / "val"), image_size=32, batch_size=8, epochs=1,
                output_dir=str(tmp_path / "runs"))
    return write_job(tmp_path / "job.toml", **(keys | extra))
