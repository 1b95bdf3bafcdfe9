"""The demo's data: scikit-learn's digits (1797 real 8x8 scans, shipped inside the package) as
ImageFolders of RGB JPEGs, upscaled, so the demo runs the same ImageFolder pipeline as a real job.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import random
import shutil
from pathlib import Path

import numpy as np

DIGITS_CSV = ("datasets", "data", "digits.csv.gz")  # inside the scikit-learn package


def digits_file() -> Path | None:
    """scikit-learn's digits file (what its load_digits reads), found without importing
    scikit-learn: that import was 0.7 of the 0.8 CPU s an export took (a demo's, each test
    worker's)."""
    spec = importlib.util.find_spec("sklearn")  # a top-level package: found, not imported
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root).joinpath(*DIGITS_CSV)
        if path.is_file():
            return path
    return None


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 8, 8] in 0..255, labels [n]): scikit-learn's load_digits, read as it
    reads it (rows of 64 pixels in 0..16, then the label), or through it when its file has
    moved."""
    path = digits_file()
    if path is None:
        from sklearn.datasets import load_digits as sk_load_digits
        d = sk_load_digits()
        images, target = d.images, d.target
    else:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = np.loadtxt(f, delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    return np.clip(images * (255.0 / 16.0), 0, 255).astype(np.uint8), target.astype(int)


def to_jpeg(image8: np.ndarray, size: int, quality: int = 95) -> bytes:
    """Bicubic upscale of one 8x8 grey scan to `size` px, white digit on black, as RGB JPEG."""
    from PIL import Image
    im = Image.fromarray(image8, mode="L").resize((size, size), Image.Resampling.BICUBIC)
    im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def split_indices(labels: np.ndarray, classes: list[int], train_per_class: int | None,
                  val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per class: shuffle, hold out `val_fraction` (at least 1) for validation, then keep
    `train_per_class` (all when None) of the rest for training."""
    rng = random.Random(seed)
    train, val = [], []
    for c in classes:
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        n_val = max(1, int(round(len(idx) * val_fraction)))
        val += idx[:n_val]
        rest = idx[n_val:]
        train += rest if train_per_class is None else rest[:train_per_class]
    return train, val


def export_split(root: Path, images: np.ndarray, labels: np.ndarray, indices: list[int],
                 size: int) -> int:
    for i in indices:
        path = root / f"digit_{labels[i]}" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_jpeg(images[i], size))
    return len(indices)


def export_digits(root: str | Path, classes: list[int], *, size: int = 32,
                  train_per_class: int | None = None, val_fraction: float = 0.2,
                  val_per_class: int | None = None, seed: int = 0) -> dict[str, int]:
    """Write <root>/train/digit_<c>/NNNN.jpg and <root>/val/...; returns image counts.
    Idempotent: an export with the same settings is reused; the marker file that says so is
    written last, so an interrupted export is redone."""
    root = Path(root)
    marker = root / ".complete"
    want = f"{classes} {size} {train_per_class} {val_fraction} {val_per_class} {seed}\n"
    if marker.exists() and marker.read_text() == want:
        return {s: sum(1 for _ in (root / s).rglob("*.jpg")) for s in ("train", "val")}
    for split in ("train", "val"):
        shutil.rmtree(root / split, ignore_errors=True)  # a stale export of other settings
    images, labels = load_digits()
    train, val = split_indices(labels, classes, train_per_class, val_fraction, seed)
    if val_per_class is not None:
        val = [i for c in classes for i in [j for j in val if labels[j] == c][:val_per_class]]
    counts = {"train": export_split(root / "train", images, labels, train, size),
              "val": export_split(root / "val", images, labels, val, size)}
    marker.write_text(want)
    return counts
