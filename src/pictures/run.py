"""The pictures a finished run leaves in its run directory (main rank only):

- predictions.png: best.ckpt's predictions on a sample of validation images (`pre:<class>`,
  blue when right, red when wrong, as in the tutorial);
- curves.png: train loss and val acc per epoch from metrics.jsonl, best epoch marked;
- confusion.png: best.ckpt's confusion matrix over the whole validation split.

best.ckpt's predictions are those of the evaluation that made it the best, kept in memory by
training (src/training/evaluate.BestEvaluation) when that evaluation covered the whole validation
split in this process: the same weights on the same images, so no second pass over the split.
Otherwise (data-parallel sharded evaluation, a best epoch from before a resume) best.ckpt is
loaded and the split predicted again.

Training has already succeeded when this runs, so a picture that cannot be made is a warning,
never a failed run.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable

import mindspore as ms
import numpy as np

from launcher.core.rundir.metrics import best_row, read_metrics
from launcher.core.rundir.names import BEST_CKPT, CONFUSION_PNG, CURVES_PNG, PREDICTIONS_PNG
from launcher.core.spec import JobSpec
from src.data import dataset
from src.pictures import visualize


def sample_indices(total: int, count: int, seed: int) -> np.ndarray:
    """`count` sorted positions out of `total`, fixed by the job's seed. The validation split is
    read in class order, so its first batch (the tutorial's choice) would show one class only."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=min(count, total), replace=False))


class Reservoir:
    """A uniform sample of up to `size` of the mistakes offered in order (reservoir sampling,
    seeded): the same positions whether the predictions come during a pass or after one."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng = size, np.random.default_rng(seed)
        self.items: list[int] = []
        self.seen = 0

    def offer(self, position: int) -> tuple[bool, int | None]:
        """(whether `position` was taken, the position it evicted or None)."""
        self.seen += 1
        slot = len(self.items) if len(self.items) < self.size else int(self.rng.integers(self.seen))
        if slot >= self.size:
            return False, None
        if slot < len(self.items):
            evicted, self.items[slot] = self.items[slot], position
            return True, evicted
        self.items.append(position)
        return True, None


def predict_keeping(net, val_ds, keep: set[int], wrong: int = 0, seed: int = 0,
                    on_batch: Callable[[int], None] = lambda n: None
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(predictions, labels) for the whole split, plus {position: normalised CHW image} for the
    positions in `keep` and for up to `wrong` misclassified images (a uniform sample of all
    mistakes: `Reservoir`), in one pass over the data. `on_batch(n)` after batch n (the
    progress record: the stall watchdog sees the pass advance)."""
    net.set_train(False)
    reservoir = Reservoir(wrong, seed)
    preds, labels, kept, position = [], [], {}, 0
    batches = val_ds.create_tuple_iterator(num_epochs=1)
    for n, (images, batch_labels) in enumerate(batches, 1):
        batch_preds = net(images).asnumpy().argmax(axis=1)
        batch_y = batch_labels.asnumpy()
        preds.append(batch_preds)
        labels.append(batch_y)
        batch = images.asnumpy()
        for i in range(len(batch)):
            if position + i in keep:
                kept[position + i] = batch[i]
            if wrong and int(batch_preds[i]) != int(batch_y[i]):
                taken, evicted = reservoir.offer(position + i)
                if evicted is not None and evicted not in keep:
                    kept.pop(evicted, None)
                if taken:
                    kept[position + i] = batch[i]
        position += len(batch)
        on_batch(n)
    if not labels:
        raise ValueError("the validation split yielded no images")
    return np.concatenate(preds), np.concatenate(labels).astype(np.int64), kept


def keeping_from(evaluation, val_ds, keep: set[int], wrong: int = 0, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """What `predict_keeping` returns, from predictions already made (`evaluation`: the best
    epoch's, src/training/evaluate.BestEvaluation): the same mistakes kept, and the images of
    the kept positions read in one pass over the data without the network."""
    preds, labels = evaluation.predictions, evaluation.labels
    if not labels.size:
        raise ValueError("the validation split yielded no images")
    reservoir = Reservoir(wrong, seed)
    for i in np.flatnonzero(preds != labels).tolist() if wrong else []:
        reservoir.offer(i)
    want = set(keep) | set(reservoir.items)
    kept, position = {}, 0
    for images, _ in val_ds.create_tuple_iterator(num_epochs=1):
        if position > max(want, default=-1):
            break
        batch = images.asnumpy()
        kept |= {position + i: batch[i] for i in range(len(batch)) if position + i in want}
        position += len(batch)
    return preds, labels, kept


def choose_shown(sample: np.ndarray, preds: np.ndarray, labels: np.ndarray,
                 kept: dict, want_wrong: int) -> np.ndarray:
    """The positions the grid shows: the random `sample`, with some of its correct ones swapped
    for kept mistakes so that at least `want_wrong` mistakes show (when there are that many)."""
    wrong = preds != labels
    shown = [int(i) for i in sample]
    have = sum(wrong[i] for i in shown)
    extra = [i for i in sorted(kept) if wrong[i] and i not in set(shown)]
    correct = [i for i in shown if not wrong[i]]
    while have < want_wrong and extra and correct:
        shown.remove(correct.pop())
        shown.append(extra.pop(0))
        have += 1
    return np.array(sorted(shown), dtype=np.int64)


def load_best(net, run_dir: Path) -> None:
    """The best epoch's weights: the pictures show the model the run keeps."""
    path = run_dir / BEST_CKPT
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (no epoch was evaluated?)")
    params = {k: v for k, v in ms.load_checkpoint(str(path)).items()
              if k not in ("epoch", "val_acc")}
    ms.load_param_into_net(net, params)


def write_curves(spec: JobSpec, run_dir: Path) -> Path:
    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError("metrics.jsonl has no epochs")
    curve = visualize.Curve.from_metrics(spec.name, rows)
    return visualize.save_png(visualize.curves_figure([curve]), run_dir / CURVES_PNG)


def checkpoint_title(spec: JobSpec, run_dir: Path) -> str:
    """Which run and which checkpoint the pictures show: best.ckpt's epoch and accuracy."""
    best = best_row(read_metrics(run_dir))
    if not best:
        return f"{spec.name}: best.ckpt"
    return f"{spec.name}: best.ckpt (epoch {best['epoch']}, val acc {best['val_acc']:.4f})"


def write_prediction_pictures(spec: JobSpec, run_dir: Path, net, val_ds, classes: list[str],
                              on_batch: Callable[[int], None] = lambda n: None,
                              evaluation=None) -> list[Path]:
    """predictions.png and confusion.png of best.ckpt. `evaluation`: the best epoch's
    predictions over the whole validation split, when training kept them (then best.ckpt is
    not loaded and the split is not predicted again); None to predict it here."""
    total = dataset.count_images(spec.val_dir)
    count = visualize.full_grid_count(min(spec.batch_size, visualize.MAX_PANELS, total))
    sample = sample_indices(total, count, spec.seed)
    want_wrong = max(1, count // 4)  # mistakes are what a reader looks for: show some
    if evaluation is not None:
        preds, labels, kept = keeping_from(evaluation, val_ds, set(sample.tolist()), want_wrong,
                                           spec.seed)
    else:
        load_best(net, run_dir)
        preds, labels, kept = predict_keeping(net, val_ds, set(sample.tolist()), want_wrong,
                                              spec.seed, on_batch)
    shown = choose_shown(sample, preds, labels, kept, want_wrong)
    images = visualize.display_images(np.stack([kept[i] for i in shown]), dataset.MEAN, dataset.STD)
    which = checkpoint_title(spec, run_dir)
    n_wrong = int((preds != labels).sum())
    n_wrong_shown = int((preds[shown] != labels[shown]).sum())
    mistakes = (f"{n_wrong_shown} of its {n_wrong} mistakes in red: pre:<predicted> (true "
                "<class>)") if n_wrong else "no mistakes"
    title = f"{which}\n{len(shown)} of {total} validation images, {mistakes}"
    grid = visualize.prediction_grid(images, preds[shown], labels[shown], classes, title=title)
    confusion = visualize.confusion_figure(labels, preds, classes,
                                           title=f"{which}\nvalidation split")
    return [visualize.save_png(grid, run_dir / PREDICTIONS_PNG),
            visualize.save_png(confusion, run_dir / CONFUSION_PNG)]


def _attempt(what: str, make: Callable[[], list[Path] | Path]) -> list[Path]:
    """Run one picture maker; on failure print a warning with the reason and carry on."""
    try:
        made = make()
        return made if isinstance(made, list) else [made]
    except Exception as e:  # noqa: BLE001 -- a finished training must not fail over a picture
        print(f"warning: could not make {what}: {type(e).__name__}: {e}", flush=True)
        print(traceback.format_exc(limit=-3), end="", flush=True)
        return []


def make_run_pictures(spec: JobSpec, run_dir: Path, net, val_ds, classes: list[str],
                      on_batch: Callable[[int], None] = lambda n: None,
                      evaluation=None) -> list[Path]:
    """Write curves.png, predictions.png and confusion.png into `run_dir`; returns the files
    written. Call on the main rank after training. `evaluation`: best.ckpt's predictions over
    the whole validation split, kept from the best epoch's evaluation; without it best.ckpt is
    loaded into `net` and the split predicted again, `on_batch(n)` after each batch
    (progress)."""
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    written = _attempt(CURVES_PNG, lambda: write_curves(spec, run_dir))
    written += _attempt(f"{PREDICTIONS_PNG} and {CONFUSION_PNG}",
                        lambda: write_prediction_pictures(spec, run_dir, net, val_ds, classes,
                                                          on_batch, evaluation))
    if written:
        source = ", best epoch's evaluation" if evaluation is not None else ""
        print(f"pictures: {', '.join(p.name for p in written)} in {run_dir} "
              f"({time.monotonic() - t0:.1f} s{source})", flush=True)
    return written
