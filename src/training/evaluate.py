"""Accuracy over a whole validation split (no dropped remainder), with the raw predictions kept
for pictures and confusion matrices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from mindspore import nn


@dataclass
class Evaluation:
    predictions: np.ndarray
    labels: np.ndarray

    @property
    def correct(self) -> int:
        return int((self.predictions == self.labels).sum())

    @property
    def total(self) -> int:
        return int(self.labels.size)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def evaluate(net: nn.Cell, dataset, on_batch: Callable[[int], None] = lambda n: None) -> Evaluation:
    """Predict every batch of `dataset` with `net` in inference mode; restores training mode.
    `on_batch(n)` after batch n (the progress record: an evaluation's batches are progress)."""
    was_training = net.training
    net.set_train(False)
    preds, labels = [], []
    try:
        batches = dataset.create_tuple_iterator(num_epochs=1)
        for n, (images, batch_labels) in enumerate(batches, 1):
            logits = net(images)
            preds.append(logits.asnumpy().argmax(axis=1))
            labels.append(batch_labels.asnumpy())
            on_batch(n)
    finally:
        net.set_train(was_training)
    if not labels:
        return Evaluation(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Evaluation(np.concatenate(preds), np.concatenate(labels).astype(np.int64))


class BestEvaluation:
    """The evaluation behind best.ckpt, kept so that the run's pictures (src/pictures/run.py) need
    no second pass over the validation split: `latest` is each evaluation as it is made, `keep`
    (the Checkpoint callback, when it saves best.ckpt) makes it `best`, of epoch `epoch`."""

    def __init__(self) -> None:
        self.latest: Evaluation | None = None
        self.best: Evaluation | None = None
        self.epoch = 0

    def keep(self, epoch: int) -> None:
        self.best, self.epoch = self.latest, epoch

    def of_whole_split(self, epoch: int, total: int) -> Evaluation | None:
        """`best` when it is the given best epoch's and covers the whole split of `total`
        images (not one rank's shard, not an epoch before a resume); else None."""
        best = self.best
        return best if best is not None and self.epoch == epoch and best.total == total else None
