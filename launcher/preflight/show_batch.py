"""`packrun show-batch JOB`: a PNG of one batch exactly as the network will see it.

The tutorial's first look at the data (the augmented 3x8 grid with class names) without a
notebook: the job's own transforms and seed, un-normalised for display, to check augmentation
settings (crop scale, flips, image size) before a long run. MindSpore is imported inside the
command only.
"""

from __future__ import annotations

import os
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.names import JOB_JSON
from launcher.core.spec import JobSpec, build_spec, load_job
from launcher.preflight.data import check_layout

SPLITS = ("train", "val")


def resolve_spec(job: str, overrides: dict) -> JobSpec:
    """A job file, or a run directory (its job.json), with CLI overrides applied."""
    if Path(job).is_dir():
        source = str(Path(job) / JOB_JSON)
        values = spec_from_json(job).to_dict() | dict(overrides)
        return build_spec(values, source=source, lenient_keys=tuple(overrides))
    return load_job(job, overrides)


def default_out(spec: JobSpec, split: str) -> Path:
    return Path.cwd() / f"{spec.name}_{split}_batch.png"


def first_batch(spec: JobSpec, split: str, classes: list[str]):
    """(images NCHW normalised, labels): a first batch drawn with the job's transforms, batch
    size and seed (a batch like training's, not necessarily epoch 1's first)."""
    import mindspore.dataset as ds

    from src.data import dataset
    ds.config.set_seed(spec.seed)
    folder = spec.train_dir if split == "train" else spec.val_dir
    data = dataset.create_dataset(folder, classes, spec.image_size, spec.batch_size,
                                  training=split == "train",
                                  num_parallel_workers=spec.num_parallel_workers,
                                  min_crop_scale=spec.min_crop_scale, hflip=spec.hflip)
    try:
        batch = next(data.create_tuple_iterator(num_epochs=1, output_numpy=True), None)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"reading a batch of {folder} failed ({first[:200]}); `packrun debug` "
                        "checks every image first and names the ones that cannot be decoded"
                        ) from None
    if batch is None:
        raise UserError(f"{folder} has fewer images than one batch (batch_size "
                        f"{spec.batch_size}, and training drops the remainder); lower batch_size")
    return batch


def show_batch_command(job: str, overrides: dict, split: str = "train",
                       out: str | None = None) -> Path:
    """Write the PNG of one `split` batch of JOB and return its path. Flags are checked before
    MindSpore is imported and any image is read."""
    if split not in SPLITS:
        raise UserError(f"--split is {split!r}; choose 'train' (augmented, as training sees it) "
                        "or 'val' (the evaluation transforms)")
    spec = resolve_spec(job, overrides)
    classes = sorted(check_layout(spec)[0])
    target = Path(out) if out else default_out(spec, split)
    if target.is_dir():
        target = target / default_out(spec, split).name
    if not target.parent.is_dir():
        raise UserError(f"--out {target}: directory {target.parent} does not exist; create it or "
                        "pick another path")
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ chatter off; errors still show
    from src.data import dataset
    from src.pictures import visualize
    images, labels = first_batch(spec, split, classes)
    pixels = visualize.display_images(images, dataset.MEAN, dataset.STD)
    title = batch_title(spec, split, len(labels))
    return visualize.save_png(visualize.batch_grid(pixels, labels, classes, title=title),
                              target).resolve()


def batch_title(spec, split: str, n: int) -> str:
    """Which split and which transforms the picture shows (src/data/dataset.py's pipelines)."""
    folder = spec.train_dir if split == "train" else spec.val_dir
    if split == "train":
        how = (f"training transforms: random crop (area >= {spec.min_crop_scale:g}) resized to "
               f"{spec.image_size} px, horizontal flip {'on' if spec.hflip else 'off'}")
    else:
        short = round(spec.image_size * 256 / 224)
        how = (f"evaluation transforms: short side resized to {short} px, "
               f"centre crop {spec.image_size} px")
    return f"{spec.name}: one {split} batch of {n} from {folder}\n{how}, then normalised"
