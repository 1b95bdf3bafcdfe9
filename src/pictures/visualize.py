"""The tutorial's pictures, headless: pure plotting functions on numpy arrays.

- `batch_grid`: a batch of images with the class name over each (the tutorial's 3x8 grid);
- `prediction_grid`: `pre:<class>` over each image, blue when right, red when wrong;
- `curves_figure`: train loss and val acc per epoch, best epoch marked, one or several runs;
- `confusion_figure`: confusion matrix with per-class accuracy.

Every function returns a matplotlib `Figure` built without pyplot, so no global figure state
leaks between calls (a worker or a test can make hundreds) and nothing ever opens a window;
`save_png` writes it atomically. No MindSpore import: the launcher's `report` uses this module
on a login node.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: clusters have no display

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from launcher.core.rundir.metrics import best_row

MAX_COLS = 8           # the tutorial's grid is 3 x 8
MAX_PANELS = 64        # a batch of 256 would make an unreadable picture: show the first 64
PANEL_W, PANEL_H = 1.5, 1.7   # inches per panel (title included); 3 x 8 -> the tutorial's 12 x 5
DPI = 100
TITLE_LINE_H = 0.2            # inches added to a grid per line of its title
RIGHT, WRONG = "blue", "red"

# The pictures a finished run holds (src/pictures/run.py writes them, launcher/runs/report.py shows
# them), in the order the report shows them.


def grid_shape(n: int, max_cols: int = MAX_COLS) -> tuple[int, int]:
    """(rows, cols) of a grid for `n` panels: one row up to `max_cols`; beyond, the widest
    column count from `max_cols` down to half of it that fills every row (10 -> 2 x 5), else
    rows of `max_cols`."""
    if n < 1:
        raise ValueError("a grid needs at least one panel")
    if n <= max_cols:
        return 1, n
    cols = next((c for c in range(max_cols, max_cols // 2 - 1, -1) if n % c == 0), max_cols)
    return math.ceil(n / cols), cols


def full_grid_count(n: int, max_cols: int = MAX_COLS) -> int:
    """The most panels, at most `n`, that fill a grid with no empty cell (for samples, whose
    size is free): 10 -> 10 (2 x 5), 11 -> 8, 24 -> 24."""
    rows, cols = grid_shape(n, max_cols)
    return n if rows * cols == n else n - n % cols


def display_images(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised NCHW batches (what the pipeline feeds the network) -> NHWC in [0, 1].

    Undoes Normalize with the same mean/std (0..255 units), instead of the tutorial's division
    by the batch maximum, so colours and contrast look like the files do."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected a batch of NCHW images, got shape {images.shape}")
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    pixels = (images * std + mean) / 255.0
    return np.clip(pixels.transpose(0, 2, 3, 1), 0.0, 1.0)


def image_grid(images: np.ndarray, titles: Sequence[str],
               colors: Sequence[str] | None = None, title: str = "") -> Figure:
    """One panel per image (NHWC in [0, 1]) with its title, in a grid sized to the batch, under
    the figure's `title`.

    Beyond MAX_PANELS only the first MAX_PANELS are drawn and the figure says so."""
    total = len(images)
    if total != len(titles) or (colors is not None and len(colors) != total):
        raise ValueError("images, titles and colors must have the same length")
    n = min(total, MAX_PANELS)
    rows, cols = grid_shape(n)
    if n < total:
        title = f"{title}\n(first {n} of {total} images)" if title else \
            f"first {n} of {total} images"
    title_h = TITLE_LINE_H * (title.count("\n") + 1) if title else 0.0
    fig = Figure(figsize=(PANEL_W * cols, PANEL_H * rows + title_h), dpi=DPI,
                 layout="constrained")
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = images[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                  cmap="gray" if image.shape[-1] == 1 else None, vmin=0.0, vmax=1.0)
        ax.set_title(titles[i], color=colors[i] if colors is not None else "black", fontsize=9)
        # no ticks: a hidden axis still lays out its default ticks for the title's position
        # (half of savefig's time; the PNG is byte-identical without them)
        ax.xaxis.set_major_locator(NullLocator())
        ax.yaxis.set_major_locator(NullLocator())
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9 if cols < 5 else 10)
    return fig


def batch_grid(images: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
               title: str = "") -> Figure:
    """The tutorial's augmented-batch picture: each image titled with its class name."""
    return image_grid(images, [class_names[int(y)] for y in labels], title=title)


def prediction_grid(images: np.ndarray, predictions: Sequence[int], labels: Sequence[int],
                    class_names: Sequence[str], title: str = "") -> Figure:
    """The tutorial's prediction picture: `pre:<class>` over each image, blue when the
    prediction is right; red with the true class under it when it is wrong."""
    if len(predictions) != len(labels):
        raise ValueError("predictions and labels must have the same length")
    titles = [f"pre:{class_names[int(p)]}" if int(p) == int(y) else
              f"pre:{class_names[int(p)]}\n(true {class_names[int(y)]})"
              for p, y in zip(predictions, labels)]
    colors = [RIGHT if int(p) == int(y) else WRONG for p, y in zip(predictions, labels)]
    return image_grid(images, titles, colors, title=title)


@dataclass(frozen=True)
class Curve:
    """One run's history as curves_figure draws it. `val_acc` holds None for epochs that
    were not evaluated; `best_epoch` 0 means none."""
    label: str
    epochs: Sequence[int]
    train_loss: Sequence[float]
    val_acc: Sequence[float | None]
    best_epoch: int = 0

    @classmethod
    def from_metrics(cls, label: str, rows: Sequence[dict]) -> "Curve":
        """From metrics.jsonl rows (launcher/core/rundir/metrics.py)."""
        best = best_row(list(rows))
        return cls(label, [r["epoch"] for r in rows], [r["train_loss"] for r in rows],
                   [r.get("val_acc") for r in rows], best["epoch"] if best else 0)


def curves_figure(curves: Sequence[Curve]) -> Figure:
    """Train loss (left) and validation accuracy (right) per epoch; the best epoch of each run
    is marked with a star and a dotted line, epochs whose loss is inf/NaN with an X at the top.
    Several runs are overlaid with a legend."""
    fig = Figure(figsize=(11, 4.5), dpi=DPI, layout="constrained")  # (legends under the axes)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for i, c in enumerate(curves):
        color = f"C{i}"
        loss_ax.plot(c.epochs, c.train_loss, marker="o", markersize=3, color=color, label=c.label)
        diverged = [e for e, loss in zip(c.epochs, c.train_loss) if not math.isfinite(loss)]
        if diverged:  # matplotlib drops inf/NaN silently: a diverged run must not look fine
            loss_ax.plot(diverged, [0.97] * len(diverged), marker="X", markersize=9, color=color,
                         linestyle="none", transform=loss_ax.get_xaxis_transform(),
                         label=f"{c.label}: loss not finite")
        evaluated = [(e, a) for e, a in zip(c.epochs, c.val_acc) if a is not None]
        if evaluated:
            acc_ax.plot(*zip(*evaluated), marker="o", markersize=3, color=color, label=c.label)
        if c.best_epoch:
            best_acc = dict(evaluated)[c.best_epoch]
            for ax in (loss_ax, acc_ax):
                ax.axvline(c.best_epoch, color=color, linestyle=":", linewidth=1)
            acc_ax.plot([c.best_epoch], [best_acc], marker="*", markersize=14, color=color,
                        linestyle="none", label=(f"{c.label}: " if len(curves) > 1 else "")
                        + f"best {best_acc:.4f} @ epoch {c.best_epoch}")
    loss_ax.set(title="train loss", xlabel="epoch", ylabel="mean loss over the epoch")
    acc_ax.set(title="validation accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:.0f}"))
    # Legends go under the plots, outside the data, so they never hide a line.
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, frameon=False,
                 ncols=2)
    acc_ax.legend(**below)
    if len(loss_ax.get_legend_handles_labels()[1]) > 1:  # several runs, or a divergence marked
        loss_ax.legend(**below)
    return fig


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int],
                     num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    labels = np.asarray(labels, np.int64)
    predictions = np.asarray(predictions, np.int64)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each true class (NaN for a class with no images)."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def confusion_figure(labels: Sequence[int], predictions: Sequence[int],
                     class_names: Sequence[str], title: str = "") -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), counts in the cells when they
    fit, each row's accuracy on the right; the title (`title`, e.g. which checkpoint, then a
    line) has the overall accuracy."""
    k = len(class_names)
    matrix = confusion_matrix(labels, predictions, k)
    accuracy = per_class_accuracy(matrix)
    side = min(max(4.0, 0.5 * k + 2.5), 20.0)
    fig = Figure(figsize=(side + 1.5, side), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="images")
    if k <= 30:  # beyond that, labels and counts overlap; the colours still tell
        slanted = k > 4
        ax.set_xticks(range(k), class_names, rotation=45 if slanted else 0,
                      ha="right" if slanted else "center")
        ax.set_yticks(range(k), [f"{name}  {acc:.0%}" if not np.isnan(acc) else f"{name}  -"
                                 for name, acc in zip(class_names, accuracy)])
        threshold = matrix.max() / 2 if matrix.size else 0
        for (t, p), count in np.ndenumerate(matrix):
            ax.text(p, t, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > threshold else "black")
    total = int(matrix.sum())
    overall = np.trace(matrix) / total if total else float("nan")
    ax.set(xlabel="predicted class", ylabel="true class  (per-class accuracy)")
    ax.set_title((f"{title}\n" if title else "")
                 + f"confusion matrix: {total} images, accuracy {overall:.4f}", fontsize=10)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` to `path` as PNG through a temporary file and os.replace, so a reader (the
    report, a user's browser) never sees half a picture. Permissions as a plain open() gives."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            fig.savefig(f, format="png", dpi=DPI)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
