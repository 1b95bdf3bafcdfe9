"""The stages of a Model Zoo ResNet, as `freeze` names them, and what a frozen prefix outputs.

Pure (no MindSpore): `packrun check` and the worker both size the feature cache from here.
The network is stem (conv1, bn1, relu, max-pool), layer1 .. layer4, then mean-pool, flatten and
the head. `freeze = X` freezes every stage up to and including X; `all` is everything but the
head, so its cached output is the pooled feature vector.
"""

from __future__ import annotations

import math

from launcher.core.spec import FREEZE

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
STEM_CELLS = ("conv1", "bn1")
HEAD = "head"
GIB = 1 << 30

# Output channels of stem, layer1 .. layer4 (src/model/resnet.py).
CHANNELS = {"resnet18": (64, 64, 128, 256, 512), "resnet34": (64, 64, 128, 256, 512),
            "resnet50": (64, 256, 512, 1024, 2048), "resnet101": (64, 256, 512, 1024, 2048)}
# Stride of each stage's output relative to the input image.
STRIDES = (4, 4, 8, 16, 32)


def frozen_stages(freeze: str) -> tuple[str, ...]:
    """The stages `freeze` holds fixed, in network order ("all": the whole backbone)."""
    if freeze not in FREEZE:
        raise ValueError(f"freeze {freeze!r}: expected one of {FREEZE}")
    if freeze == "all":
        return STAGES
    return STAGES[:FREEZE.index(freeze)]


def stage_of(name: str, head: str) -> str:
    """The stage a parameter belongs to, from its name: `layer3.1.conv2.weight` -> layer3,
    `conv1.weight` -> stem, the head's parameters -> head."""
    if name == head or name.startswith(head + "."):
        return HEAD
    first = name.split(".", 1)[0]
    if first in STEM_CELLS:
        return "stem"
    return first if first in STAGES else "other"


def prefix_output_shape(arch: str, freeze: str, image_size: int) -> tuple[int, ...]:
    """Per-image shape of what the frozen prefix outputs: (C, H, W) after a stage, or (C,) for
    `all` (the pooled features the head classifies)."""
    stages = frozen_stages(freeze)
    if not stages:
        raise ValueError("freeze = \"none\" has no frozen prefix")
    channels = CHANNELS[arch]
    if freeze == "all":
        return (channels[-1],)
    index = len(stages) - 1
    side = image_size
    for _ in range(int(math.log2(STRIDES[index]))):
        side = -(-side // 2)  # every stride-2 step (conv1, max-pool, first block) rounds up
    return (channels[index], side, side)


def cache_bytes(arch: str, freeze: str, image_size: int, train_images: int, views: int,
                val_images: int) -> int:
    """float32 bytes the feature cache holds for one worker."""
    per_image = math.prod(prefix_output_shape(arch, freeze, image_size)) * 4
    return per_image * (train_images * views + val_images)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
