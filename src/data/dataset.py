"""ImageFolder datasets with the tutorial's transforms, sharded for data-parallel runs.

Layout: <dir>/<class_name>/<image files>. Class indices follow sorted folder names, the same for
train and val (the launcher's preflight checks both splits agree before training starts). Which
files are samples is decided by launcher/core/samples.py, the same rule the preflight scans
with; the dataset reads exactly that list (a GeneratorDataset of encoded bytes, decoded by
MindSpore's C++ vision ops as ImageFolderDataset would).
"""

from __future__ import annotations

import os
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.transforms as T
import mindspore.dataset.vision as vision
import numpy as np

from launcher.core.samples import scan_split
from src.data.images import BadImage, jpeg_problem

# ImageNet statistics in 0..255 pixel units, as in the tutorial.
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def class_names(folder: str | Path) -> list[str]:
    """Sorted names of the class sub-folders (launcher/core/samples.py: hidden folders are none)."""
    return sorted(scan_split(folder).classes)


class _Samples:
    """Random-access source for GeneratorDataset: (encoded image bytes, label) of sample i."""

    def __init__(self, folder: str | Path, classes: list[str] | None):
        split = scan_split(folder)
        index = {name: i for i, name in enumerate(classes or sorted(split.classes))}
        self.items = [(str(p), index[name]) for name in sorted(split.classes) if name in index
                      for p in split.classes[name]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        data = np.fromfile(path, dtype=np.uint8)
        problem = jpeg_problem(memoryview(data))
        if problem:
            raise BadImage(f"image {path} {problem}; replace or delete it (image_check = \"all\" "
                           "finds every such file before training)")
        return data, np.array(label, dtype=np.int32)


def train_transforms(image_size: int, min_crop_scale: float = 0.08, hflip: bool = True) -> list:
    """The tutorial's training augmentation (decode fused with the random crop)."""
    return [
        vision.RandomCropDecodeResize(image_size, scale=(min_crop_scale, 1.0), ratio=(0.75, 1.333)),
        *([vision.RandomHorizontalFlip(prob=0.5)] if hflip else []),
        vision.Normalize(mean=MEAN, std=STD),
        vision.HWC2CHW(),
    ]


def eval_resize(image_size: int) -> int:
    """The short side images are resized to before the centre crop (256 for 224)."""
    return int(round(image_size * 256 / 224))


def eval_transforms(image_size: int) -> list:
    """Resize the short side to 256/224 of the crop, centre-crop, normalise.

    The tutorial forgets Normalize here, so it evaluates on inputs scaled differently from
    training; packrun normalises both (README: what differs from the tutorial)."""
    return [
        vision.Decode(),
        vision.Resize(eval_resize(image_size)),
        vision.CenterCrop(image_size),
        vision.Normalize(mean=MEAN, std=STD),
        vision.HWC2CHW(),
    ]


def count_images(folder: str | Path) -> int:
    """Samples of a split (sample ids 0..n-1 of create_dataset)."""
    return scan_split(folder).count()


def shard_indices(n: int, world: int, rank: int, seed: int, epoch: int | None) -> list[int]:
    """This rank's sample ids for one epoch.

    Training (`epoch` given): a permutation that depends only on (seed, epoch), cut into `world`
    disjoint shards of equal size n // world (so every rank runs the same number of steps; the
    n % world left over differ from epoch to epoch). Evaluation (`epoch` None): every id exactly
    once, in order, dealt round-robin (shards may differ in size by one)."""
    if epoch is None:
        return list(range(rank, n, world))
    order = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = n // world
    return order[rank * per_rank:(rank + 1) * per_rank].tolist()


AUTO_PIPELINE_WORKERS = 8  # num_parallel_workers = 0: MindSpore's own default, or fewer cores


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity mask: a bound rank's range)."""
    return sorted(os.sched_getaffinity(0))


def pipeline_workers(requested: int) -> int:
    """Data pipeline threads per operation: `requested` (0 = auto), never more than the cores
    this process may use. MindSpore refuses more workers than cores, and a bound rank's threads
    stay within its range anyway, so a job file written for a 192-core Ascend host still runs on
    a laptop."""
    cores = len(usable_cores()) or 1
    return max(1, min(requested or AUTO_PIPELINE_WORKERS, cores))


def create_dataset(folder: str | Path, classes: list[str], image_size: int, batch_size: int, *,
                   training: bool, indices: list[int] | None = None, reshuffle: bool = False,
                   num_parallel_workers: int = 4, augment: bool | None = None,
                   min_crop_scale: float = 0.08, hflip: bool = True) -> ds.Dataset:
    """Batches of (image float32 NCHW, label int32).

    `indices` (see shard_indices) fixes which samples are read, in that order, or in a new
    random order every epoch with `reshuffle`; None reads the whole folder (shuffled each epoch
    when training). training=True: augmented, remainder
    dropped (every rank must run the same number of steps). training=False: every image kept
    (accuracy covers the whole split). `augment` overrides whether training transforms are used.
    """
    augment = training if augment is None else augment
    num_parallel_workers = pipeline_workers(num_parallel_workers)
    if indices is None:
        order = dict(shuffle=training)
    else:
        sampler = ds.SubsetRandomSampler if reshuffle else ds.SubsetSampler
        order = dict(sampler=sampler(indices))
    data = ds.GeneratorDataset(_Samples(folder, classes), column_names=["image", "label"],
                               num_parallel_workers=num_parallel_workers,
                               python_multiprocessing=False, **order)
    trans = (train_transforms(image_size, min_crop_scale, hflip) if augment
             else eval_transforms(image_size))
    data = data.map(operations=trans, input_columns="image",
                    num_parallel_workers=num_parallel_workers)
    data = data.map(operations=T.TypeCast(ms.int32), input_columns="label",
                    num_parallel_workers=num_parallel_workers)
    return data.batch(batch_size, drop_remainder=training)
