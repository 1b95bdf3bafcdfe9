"""Checks that cost seconds now instead of a failed run later: data layout and decodable images.

Runs in the launcher before any worker starts (no MindSpore import). Images are decoded with
Pillow; a file Pillow cannot decode would fail MindSpore's decoder too.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from launcher.errors import UserError
from launcher.spec import JobSpec

# Must match src/dataset.py IMAGE_EXTENSIONS (a test holds them equal; this module may not
# import src, which imports MindSpore).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP")
AUTO_ALL_LIMIT = 20000
SAMPLE_PER_SPLIT = 200


def split_layout(key: str, folder: str) -> dict[str, list[Path]]:
    """{class name: image files} for one split, with errors naming the folder and the fix."""
    root = Path(folder)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{key} {root} has no class sub-folders; expected {root}/<class>/<image>"
                        " (one folder per class, as for ImageFolderDataset)")
    layout = {}
    for c in classes:
        files = sorted(p for p in c.iterdir() if p.is_file() and p.suffix in IMAGE_EXTENSIONS)
        if not files:
            raise UserError(f"{key}: class folder {c} holds no images "
                            f"({'/'.join(IMAGE_EXTENSIONS[:4])}); add images or remove the folder")
        layout[c.name] = files
    return layout


def check_layout(spec: JobSpec) -> tuple[dict, dict]:
    train = split_layout("train_dir", spec.train_dir)
    val = split_layout("val_dir", spec.val_dir)
    if sorted(train) != sorted(val):
        only_train = sorted(set(train) - set(val))
        only_val = sorted(set(val) - set(train))
        raise UserError(
            f"train_dir and val_dir have different classes: only in train: "
            f"{', '.join(only_train) or '-'}; only in val: {', '.join(only_val) or '-'} "
            f"({spec.train_dir} vs {spec.val_dir}). Both splits need the same class folders")
    if len(train) != spec.num_classes:
        raise UserError(f"num_classes is {spec.num_classes} but {spec.train_dir} has {len(train)} "
                        f"class folders ({', '.join(sorted(train))}); set num_classes = {len(train)}")
    return train, val


def decode_error(path: Path) -> str | None:
    """None if `path` decodes completely, else Pillow's reason."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, still reads every byte
            im.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        return str(e) or type(e).__name__
    return None


def images_to_scan(files: list[Path], policy: str, seed: int) -> list[Path]:
    if policy == "none":
        return []
    if policy == "all" or (policy == "auto" and len(files) <= AUTO_ALL_LIMIT):
        return files
    return random.Random(seed).sample(files, min(SAMPLE_PER_SPLIT, len(files)))


def check_images(files: list[Path], log=print) -> None:
    started = last = time.monotonic()
    for i, path in enumerate(files, 1):
        reason = decode_error(path)
        if reason:
            raise UserError(f"image {path} cannot be decoded ({reason}); replace or delete it "
                            "(or set image_check = \"none\" to skip this scan)")
        now = time.monotonic()
        if now - last > 5:
            last = now
            log(f"  checked {i}/{len(files)} images ({i / (now - started):.0f}/s)")


def preflight(spec: JobSpec, log=None) -> dict:
    """Data checks before a run; returns a small summary for the console."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    train, val = check_layout(spec)
    all_files = [f for files in (*train.values(), *val.values()) for f in files]
    scan = images_to_scan(all_files, spec.image_check, spec.seed)
    if len(scan) > 2000:
        log(f"checking {len(scan)} images decode (image_check = \"none\" skips this)")
    check_images(scan, log)
    return {"classes": sorted(train), "train_images": sum(map(len, train.values())),
            "val_images": sum(map(len, val.values())), "images_checked": len(scan)}
