"""Checks that cost seconds now instead of a failed run later: data layout and decodable images.

Runs in the launcher before any worker starts (no MindSpore import). Images are decoded with
Pillow; a file Pillow cannot decode would fail MindSpore's decoder too.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from launcher.core.errors import Interrupted, UserError
from launcher.core.log import STDERR, get_logger
from launcher.core.samples import IMAGE_EXTENSIONS, Split, scan_split
from launcher.core.spec import JobSpec

log = get_logger(__name__)

AUTO_ALL_LIMIT = 20000
MAX_LISTED_SKIPPED = 3
SAMPLE_PER_SPLIT = 200


def scan(key: str, folder: str) -> Split:
    """One split as the dataset reads it (launcher/core/samples.py), with errors naming the folder
    and the fix."""
    root = Path(folder)
    try:
        split = scan_split(root)
    except UserError as e:
        raise UserError(f"{key}: {e}") from None
    if not split.classes:
        raise UserError(f"{key} {root} has no class sub-folders; expected {root}/<class>/<image>"
                        " (one folder per class, as for ImageFolderDataset)")
    for name, files in split.classes.items():
        if not files:
            raise UserError(f"{key}: class folder {root / name} holds no images "
                            f"({'/'.join(IMAGE_EXTENSIONS)}, any case); add images or remove "
                            "the folder")
    return split


def split_layout(key: str, folder: str) -> dict[str, list[Path]]:
    """{class name: image files} for one split."""
    return scan(key, folder).classes


def skipped_report(key: str, split: Split) -> str | None:
    """One line naming what the split's class folders hold that is not read, or None."""
    if not split.skipped:
        return None
    shown = "; ".join(f"{p} ({why})" for p, why in split.skipped[:MAX_LISTED_SKIPPED])
    more = len(split.skipped) - MAX_LISTED_SKIPPED
    return (f"{key}: {len(split.skipped)} entr{'y' if len(split.skipped) == 1 else 'ies'} in "
            f"class folders {'is' if len(split.skipped) == 1 else 'are'} not read: {shown}"
            f"{f'; and {more} more' if more > 0 else ''}")


def scan_splits(spec: JobSpec, world: int | None = None) -> tuple[Split, Split]:
    """Both splits, checked against each other, num_classes and batch_size."""
    train_split, val_split = scan("train_dir", spec.train_dir), scan("val_dir", spec.val_dir)
    train, val = train_split.classes, val_split.classes
    if sorted(train) != sorted(val):
        only_train = sorted(set(train) - set(val))
        only_val = sorted(set(val) - set(train))
        raise UserError(
            f"train_dir and val_dir have different classes: only in train: "
            f"{', '.join(only_train) or '-'}; only in val: {', '.join(only_val) or '-'} "
            f"({spec.train_dir} vs {spec.val_dir}). Both splits need the same class folders")
    if len(train) != spec.num_classes:
        raise UserError(f"num_classes is {spec.num_classes} but {spec.train_dir} has {len(train)} "
                        f"class folders ({', '.join(sorted(train))}); "
                        f"set num_classes = {len(train)}")
    world = world or spec.nodes * spec.cards_per_node
    per_worker = train_split.count() // world
    if spec.batch_size > per_worker:
        workers = f" / {world} workers" if world > 1 else ""
        raise UserError(f"batch_size {spec.batch_size} is larger than the training split "
                        f"({train_split.count()} images in {spec.train_dir}{workers}: "
                        f"{per_worker} per worker); training drops incomplete batches, so no "
                        f"step would run. Set batch_size <= {max(per_worker, 1)}"
                        + (" or use fewer workers" if world > 1 else ""))
    return train_split, val_split


def check_layout(spec: JobSpec, world: int | None = None) -> tuple[dict, dict]:
    train, val = scan_splits(spec, world)
    return train.classes, val.classes


def decode_error(path: Path) -> str | None:
    """None if `path` decodes completely, else Pillow's reason."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, still reads every byte
            im.load()
    except Exception as e:  # noqa: BLE001 (Pillow raises OSError, SyntaxError, ValueError... for bad files)
        return str(e) or type(e).__name__
    return None


def images_to_scan(files: list[Path], policy: str, seed: int) -> list[Path]:
    if policy == "none":
        return []
    if policy == "all" or (policy == "auto" and len(files) <= AUTO_ALL_LIMIT):
        return files
    return random.Random(seed).sample(files, min(SAMPLE_PER_SPLIT, len(files)))


def check_images(files: list[Path]) -> None:
    started = last = time.monotonic()
    for i, path in enumerate(files, 1):
        reason = decode_error(path)
        if reason:
            raise UserError(f"image {path} cannot be decoded ({reason}); replace or delete it "
                            "(or set image_check = \"none\" to skip this scan)")
        now = time.monotonic()
        if now - last > 5:
            last = now
            log.info(f"  checked {i}/{len(files)} images ({i / (now - started):.0f}/s)",
                     extra=STDERR)


def job_warnings(spec: JobSpec) -> list[str]:
    """Valid settings that are almost certainly not meant; said by `check` and at every start."""
    out = []
    if spec.mode == "fixed_feature" and not spec.pretrained:
        out.append("mode = \"fixed_feature\" with pretrained = \"\": the backbone stays at its "
                   "RANDOM initial weights and only the head trains, which learns next to "
                   "nothing; set pretrained to a checkpoint, or mode = \"finetune\"")
    return out


def interrupted(what: str) -> Interrupted:
    """Ctrl-C during a preflight scan: nothing has started yet, so it is a clean stop (exit
    130, like every Ctrl-C)."""
    return Interrupted(f"interrupted (Ctrl-C) while {what}; nothing was started. To make the "
                       "scan shorter set image_check = \"sample\" (or \"none\")")


def preflight(spec: JobSpec) -> dict:
    """Data checks before a run; returns a small summary for the console."""
    try:
        return _preflight(spec)
    except KeyboardInterrupt:
        raise interrupted("checking the data") from None


def _preflight(spec: JobSpec) -> dict:
    for text in job_warnings(spec):
        log.warning(f"packrun: WARNING: {text}")
    train_split, val_split = scan_splits(spec, world=1)
    for key, split in (("train_dir", train_split), ("val_dir", val_split)):
        report = skipped_report(key, split)
        if report:
            log.warning(f"packrun: warning: {report}")
    train, val = train_split.classes, val_split.classes
    all_files = [f for files in (*train.values(), *val.values()) for f in files]
    scan = images_to_scan(all_files, spec.image_check, spec.seed)
    if len(scan) > 2000:
        log.info(f"checking {len(scan)} images decode (image_check = \"none\" skips this)",
                 extra=STDERR)
    check_images(scan)
    return {"classes": sorted(train), "train_images": sum(map(len, train.values())),
            "val_images": sum(map(len, val.values())), "images_checked": len(scan)}
