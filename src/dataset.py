"""ImageFolder datasets with the tutorial's transforms, sharded for data-parallel runs.

Layout: <dir>/<class_name>/<image files>. Class indices follow sorted folder names, the same for
train and val (the launcher's preflight checks both splits agree before training starts).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.transforms as T
import mindspore.dataset.vision as vision

# The files ImageFolderDataset reads (it would read every file in a class folder otherwise,
# and a stray README would fail mid-training). Preflight scans exactly these.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP")

# ImageNet statistics in 0..255 pixel units, as in the tutorial.
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def class_names(folder: str | Path) -> list[str]:
    """Sorted names of the class sub-folders (hidden folders ignored)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: str | Path) -> list[Path]:
    """Every image the dataset will read, in class order."""
    files = []
    for name in class_names(folder):
        files += sorted(p for p in (Path(folder) / name).iterdir()
                        if p.is_file() and p.suffix in IMAGE_EXTENSIONS)
    return files


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
    """Images in an ImageFolder as ImageFolderDataset indexes them (sample ids 0..n-1)."""
    return ds.ImageFolderDataset(str(folder), extensions=list(IMAGE_EXTENSIONS),
                                 shuffle=False).get_dataset_size()


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
    # MindSpore refuses more workers than cores; a job file written for a 192-core Ascend host
    # must still run on a laptop.
    num_parallel_workers = max(1, min(num_parallel_workers, os.cpu_count() or 1))
    if indices is None:
        order = dict(shuffle=training)
    else:
        sampler = ds.SubsetRandomSampler if reshuffle else ds.SubsetSampler
        order = dict(sampler=sampler(indices))
    data = ds.ImageFolderDataset(
        str(folder), extensions=list(IMAGE_EXTENSIONS),
        class_indexing={name: i for i, name in enumerate(classes)},
        num_parallel_workers=num_parallel_workers, **order)
    trans = train_transforms(image_size, min_crop_scale, hflip) if augment else eval_transforms(image_size)
    data = data.map(operations=trans, input_columns="image",
                    num_parallel_workers=num_parallel_workers)
    data = data.map(operations=T.TypeCast(ms.int32), input_columns="label",
                    num_parallel_workers=num_parallel_workers)
    return data.batch(batch_size, drop_remainder=training)
