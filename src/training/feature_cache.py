"""Training the unfrozen rest of the network on cached outputs of its frozen prefix.

With stages frozen up to `freeze` (their BatchNorm statistics too, see
src/training/transfer.py), the prefix's output is a function of the input image alone, so
recomputing it every epoch is waste.
The cache runs the prefix once per image and view; the trainable rest (the later stages, the
pooling and the head; for `freeze = "all"` the head alone) then trains on the stored
activations every epoch. The rest's parameters are the network's own, so best.ckpt and
last.ckpt still hold the full network and load like any other checkpoint.

Views: `feature_cache = "eval"` (default) stores one view per image made with the evaluation
transforms (no augmentation); `"augmented"` stores `cache_views` augmented views of every
training image (the training transforms, each view its own seed), and each epoch picks one view
per image. Validation activations always use the evaluation transforms, so cached validation
accuracy equals what the full network gives.

Memory: the worker says what the cache will hold before it starts (src/model/stages.py sizes it).
Past `cache_max_gib` it recomputes instead: with `eval` views it feeds the same images in the
same order through the whole network, which gives the cached run's result (tests/
test_transfer.py holds the two equal); `augmented` views cannot be replayed, so it trains on
freshly augmented images as `feature_cache = "off"` does.
"""

from __future__ import annotations

import time
from typing import Callable

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import nn

from launcher.core.errors import UserError
from launcher.core.rundir.progress import Stage
from src.data import dataset
from src.model.stages import (
    GIB,
    STAGES,
    cache_bytes,
    frozen_stages,
    human_bytes,
    prefix_output_shape,
)
from src.training import seeds
from src.training.evaluate import Evaluation, evaluate


class Prefix(nn.Cell):
    """The frozen stages (stem .. `freeze`; for `all` the whole backbone, pooled)."""

    def __init__(self, net: nn.Cell, freeze: str):
        super().__init__(auto_prefix=False)  # keep the network's parameter names (checkpoints)
        self.net = net
        self.whole = freeze == "all"
        self.last = len(frozen_stages(freeze)) - 1  # index into STAGES

    def construct(self, x):
        if self.whole:
            return self.net.features(x)
        x = self.net.stem(x)
        if self.last >= 1:
            x = self.net.layer1(x)
        if self.last >= 2:
            x = self.net.layer2(x)
        if self.last >= 3:
            x = self.net.layer3(x)
        return x


class Rest(nn.Cell):
    """What follows the prefix: the unfrozen stages, the pooling and the head."""

    def __init__(self, net: nn.Cell, freeze: str, head: str):
        super().__init__(auto_prefix=False)
        self.net = net
        self.first = len(STAGES) if freeze == "all" else len(frozen_stages(freeze))
        self.head = dict(net.cells_and_names())[head]

    def construct(self, x):
        if self.first <= 1:
            x = self.net.layer1(x)
        if self.first <= 2:
            x = self.net.layer2(x)
        if self.first <= 3:
            x = self.net.layer3(x)
        if self.first <= 4:
            x = self.net.pool(self.net.layer4(x))
        return self.head(x)


def extract(prefix: Prefix, dataset, shape: tuple, what: str, log=print,
            out: np.ndarray | None = None, recorder=None) -> tuple[np.ndarray, np.ndarray]:
    """(activations float32 [n, *shape], labels int32 [n]) for every image of `dataset`, in its
    order, written into `out` when given (no second copy). `recorder` (src/training/progress.py)
    records the pass as the CACHING stage and each batch as progress (the stall watchdog)."""
    if recorder is not None:
        recorder.stage(Stage.CACHING)
    prefix.set_train(False)
    total = dataset.get_dataset_size()
    n = dataset.get_dataset_size() * dataset.get_batch_size() if out is None else len(out)
    feats = np.empty((n,) + tuple(shape), np.float32) if out is None else out
    labels = np.empty(n, np.int32)
    start = last = time.monotonic()
    position = 0
    for i, (images, batch_labels) in enumerate(dataset.create_tuple_iterator(num_epochs=1), 1):
        batch = prefix(images).asnumpy()
        feats[position:position + len(batch)] = batch
        labels[position:position + len(batch)] = batch_labels.asnumpy()
        position += len(batch)
        if recorder is not None:
            recorder.batch(i)
        now = time.monotonic()
        if now - last > 10:
            last = now
            log(f"  caching {what}: batch {i}/{total} ({i / (now - start):.1f} batches/s)")
    return feats[:position], labels[:position]


class _Batches:
    """Random-access source of one epoch's batches, gathered from the cache batch by batch (no
    copy of the whole epoch)."""

    def __init__(self, views: np.ndarray, labels: np.ndarray, order: np.ndarray,
                 view: np.ndarray, batch_size: int):
        self.views, self.labels, self.order, self.view = views, labels, order, view
        self.batch_size = batch_size

    def __len__(self):
        return len(self.order) // self.batch_size

    def __getitem__(self, i):
        rows = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        return self.views[self.view[rows], rows], self.labels[rows]


def epoch_order(seed: int, epoch: int, rank: int, n: int,
                views: int) -> tuple[np.ndarray, np.ndarray]:
    """(row order, view per row) of an epoch over a rank's cached shard: a function of (seed,
    epoch, rank) only, so a resumed run sees the same epochs."""
    rng = np.random.default_rng([seed, epoch, rank])
    return rng.permutation(n), rng.integers(views, size=n)


class FeatureCache:
    """Cached prefix outputs of this rank's training shard (views x images) and of its
    validation images; the rest trains on them."""

    def __init__(self, rest: Rest, train_views: np.ndarray, train_labels: np.ndarray,
                 val_feats: np.ndarray, val_labels: np.ndarray, batch_size: int, seed: int,
                 rank: int, eval_batch_size: int = 0):
        self.network = rest
        self.train_views, self.train_labels = train_views, train_labels  # [views, n, ...]
        self.val_feats, self.val_labels = val_feats, val_labels
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.eval_batch_size = eval_batch_size or batch_size

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_labels) // self.batch_size

    def train_dataset(self, epoch: int):
        """Epoch `epoch`: this shard's rows in an order, and with a view per row, that depend
        only on (seed, epoch, rank)."""
        order, view = epoch_order(self.seed, epoch, self.rank, len(self.train_labels),
                                  len(self.train_views))
        return ds.GeneratorDataset(_Batches(self.train_views, self.train_labels, order, view,
                                            self.batch_size),
                                   column_names=["feature", "label"], shuffle=False,
                                   python_multiprocessing=False)

    def evaluate(self, on_batch: Callable[[int], None] = lambda n: None) -> Evaluation:
        """The rest's predictions on the cached validation activations."""
        rest = self.network
        was_training = rest.training
        rest.set_train(False)
        preds = []
        step = self.eval_batch_size
        for n, start in enumerate(range(0, len(self.val_labels), step), 1):
            logits = rest(ms.Tensor(self.val_feats[start:start + step]))
            preds.append(logits.asnumpy().argmax(axis=1))
            on_batch(n)
        rest.set_train(was_training)
        preds = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        return Evaluation(preds, self.val_labels.astype(np.int64))


class Recomputed:
    """The fallback past cache_max_gib for `eval` views: the same images, in the same order per
    epoch, through the whole network (the frozen prefix recomputed every step)."""

    def __init__(self, net, shard: list[int], make_dataset, val_ds, batch_size: int, seed: int,
                 rank: int):
        self.network, self.shard, self.make_dataset = net, np.asarray(shard), make_dataset
        self.val_ds, self.batch_size, self.seed, self.rank = val_ds, batch_size, seed, rank

    @property
    def steps_per_epoch(self) -> int:
        return len(self.shard) // self.batch_size

    def train_dataset(self, epoch: int):
        order, _ = epoch_order(self.seed, epoch, self.rank, len(self.shard), 1)
        return self.make_dataset(self.shard[order].tolist())

    def evaluate(self, on_batch: Callable[[int], None] = lambda n: None) -> Evaluation:
        return evaluate(self.network, self.val_ds, on_batch)


def build(spec, par, net, n_train: int, val_indices, val_ds, data_args, say, recorder=None):
    """The feature cache for this rank (FeatureCache), its recomputing stand-in past
    cache_max_gib (Recomputed), or None when the run should train on the ordinary pipeline."""
    if spec.head != "end_point":
        raise UserError(f"feature_cache needs the ResNet head 'end_point' (head is {spec.head!r}); "
                        "set feature_cache = \"off\"")
    t0 = time.monotonic()
    shard = dataset.shard_indices(n_train, par.world, par.rank, spec.seed, 0)
    augmented = spec.feature_cache == "augmented"
    n_views = spec.cache_views if augmented else 1
    evaluating = par.is_main or val_indices is not None
    n_val = (len(val_indices) if val_indices is not None else
             dataset.count_images(spec.val_dir)) if evaluating else 0
    shape = prefix_output_shape(spec.arch, spec.freeze, spec.image_size)
    need = cache_bytes(spec.arch, spec.freeze, spec.image_size, len(shard), n_views, n_val)
    prefix_name = "the backbone" if spec.freeze == "all" else \
        "stem" if spec.freeze == "stem" else f"stem..{spec.freeze}"
    what = (f"{prefix_name} output {'x'.join(map(str, shape))} float32 per image: "
            f"{len(shard)} train images x {n_views} {'augmented' if augmented else 'eval'} "
            f"view(s) + {n_val} val images = {human_bytes(need)}")
    if need > spec.cache_max_gib * GIB:
        if augmented:
            say(f"note: feature cache would hold {what}, over cache_max_gib = "
                f"{spec.cache_max_gib:g}; training on freshly augmented images instead, "
                "recomputing the frozen prefix every step (as feature_cache = \"off\"). Raise "
                "cache_max_gib to cache.")
            return None
        say(f"note: feature cache would hold {what}, over cache_max_gib = "
            f"{spec.cache_max_gib:g}; recomputing the frozen prefix every step instead (same "
            "result, slower). Raise cache_max_gib to cache.")

        def eval_batches(indices):  # what the `eval` cache holds, in the cache's order
            return dataset.create_dataset(spec.train_dir, training=True, augment=False,
                                          indices=indices, **data_args)
        return Recomputed(net, shard, eval_batches, val_ds, spec.batch_size, spec.seed, par.rank)
    say(f"feature cache: will hold {what} (cache_max_gib = {spec.cache_max_gib:g})")
    prefix = Prefix(net, spec.freeze)
    views = np.empty((n_views, len(shard)) + shape, np.float32)
    labels = None
    for view in range(n_views):
        ds.config.set_seed(seeds.derived_seed(spec.seed, seeds.VIEW, view))
        images = dataset.create_dataset(spec.train_dir, training=False, augment=augmented,
                                        indices=shard, min_crop_scale=spec.min_crop_scale,
                                        hflip=spec.hflip, **data_args)
        _, labels = extract(prefix, images, shape, f"train view {view + 1}", say,
                            out=views[view], recorder=recorder)
    val_feats = np.zeros((0,) + shape, np.float32)
    val_labels = np.zeros(0, np.int32)
    if evaluating:
        val = dataset.create_dataset(spec.val_dir, training=False, indices=val_indices,
                                     **(data_args | {"batch_size": spec.eval_batch_size
                                                     or spec.batch_size}))  # forward only
        val_feats, val_labels = extract(prefix, val, shape, "val", say,
                                        out=np.empty((n_val,) + shape, np.float32),
                                        recorder=recorder)
    say(f"feature cache: {len(labels)} train images x {n_views} "
        f"{'augmented' if augmented else 'eval'} view(s), {len(val_labels)} val images, "
        f"{time.monotonic() - t0:.1f} s")
    return FeatureCache(Rest(net, spec.freeze, spec.head), views, labels, val_feats, val_labels,
                        spec.batch_size, spec.seed, par.rank, spec.eval_batch_size)

