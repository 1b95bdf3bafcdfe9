"""Fixed-feature training on cached backbone outputs.

With the backbone frozen (its BatchNorm statistics too, see checkpoint.freeze_backbone), its
output is a function of the input image alone, so recomputing it every epoch is waste. The
cache runs the backbone once per image and view, then the head trains on the stored features
for every epoch. The head's parameters are the network's own, so best.ckpt and last.ckpt still
hold the full network and load like any other checkpoint.

Views: `feature_cache = "eval"` (default) stores one view per image made with the evaluation
transforms (no augmentation); `"augmented"` stores `cache_views` augmented views of every training
image (the training transforms, each view its own seed), and each epoch picks one view per
image. Validation features always use the evaluation transforms, so cached validation accuracy
equals what the full network gives.
"""

from __future__ import annotations

import time

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn

from src.evaluate import Evaluation


class Backbone(nn.Cell):
    """The network without its head (ResNet.features)."""

    def __init__(self, net: nn.Cell):
        super().__init__(auto_prefix=False)  # keep the network's parameter names (checkpoints)
        self.net = net

    def construct(self, x):
        return self.net.features(x)


def extract(backbone: Backbone, dataset, what: str, log=print) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 [n, d], labels int32 [n]) for every image of `dataset`, in its order."""
    backbone.set_train(False)
    feats, labels = [], []
    total = dataset.get_dataset_size()
    start = last = time.monotonic()
    for i, (images, batch_labels) in enumerate(dataset.create_tuple_iterator(num_epochs=1), 1):
        feats.append(backbone(images).asnumpy())
        labels.append(batch_labels.asnumpy())
        now = time.monotonic()
        if now - last > 10:
            last = now
            log(f"  caching {what}: batch {i}/{total} ({i / (now - start):.1f} batches/s)")
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int32)


class FeatureCache:
    """Cached features of this rank's training shard (views x images) and of its validation
    images, and the per-epoch datasets the head trains on."""

    def __init__(self, train_views: list[np.ndarray], train_labels: np.ndarray,
                 val_feats: np.ndarray, val_labels: np.ndarray, batch_size: int, seed: int,
                 rank: int):
        self.train_views, self.train_labels = train_views, train_labels
        self.val_feats, self.val_labels = val_feats, val_labels
        self.batch_size, self.seed, self.rank = batch_size, seed, rank

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_labels) // self.batch_size

    def train_dataset(self, epoch: int):
        """Epoch `epoch`: this shard's rows in an order, and with a view per row, that depend
        only on (seed, epoch, rank)."""
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        n = len(self.train_labels)
        order = rng.permutation(n)
        view = rng.integers(len(self.train_views), size=n)
        stacked = np.stack(self.train_views)               # [views, n, d]
        feats = stacked[view[order], order]
        data = ds.NumpySlicesDataset((feats, self.train_labels[order]),
                                     column_names=["feature", "label"], shuffle=False)
        return data.batch(self.batch_size, drop_remainder=True)

    def evaluate(self, head: nn.Cell) -> Evaluation:
        """The head's predictions on the cached validation features."""
        was_training = head.training
        head.set_train(False)
        preds = []
        for start in range(0, len(self.val_labels), 256):
            logits = head(ms.Tensor(self.val_feats[start:start + 256]))
            preds.append(logits.asnumpy().argmax(axis=1))
        head.set_train(was_training)
        preds = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        return Evaluation(preds, self.val_labels.astype(np.int64))
