"""`packrun demo`'s source model, reused while its settings and data are unchanged.

Step 1 of the demo (a ResNet trained from scratch on digits 0-7) is the longest and gives the
same checkpoint every time for the same job settings, data and network code, so its best
checkpoint is kept under ``<workdir>/pretrained/source-<digest>.ckpt`` with a JSON record beside
it, one slot per digest (``--quick`` and the full demo do not evict each other). The digest
covers the resolved source spec except where runs are written (``output_dir``, ``name``), every
file of the source train/val folders (relative path and bytes) and the network definition
(``src/model/resnet.py``, with the native kernels of its CPU path). ``packrun demo --fresh``
retrains and replaces the slot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from launcher.core.log import get_logger
from launcher.core.paths import REPO
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.names import BEST_CKPT

log = get_logger(__name__)

# the network definition, and the CPU path's native kernels it runs
NETWORK_SOURCES = (REPO / "src" / "model" / "resnet.py", REPO / "src" / "native" / "kernels.py",
                   *sorted((REPO / "src" / "native").glob("*.[ch]*")))
# Where and under which name runs are written: they change no weight.
IGNORED_KEYS = ("output_dir", "name")


def tree_digest(*roots: Path) -> str:
    """sha256 over every file under ``roots``: its path relative to its root, then its bytes."""
    h = hashlib.sha256()
    for root in roots:
        root = Path(root)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
        h.update(b"\1")
    return h.hexdigest()


def source_digest(spec) -> str:
    """Digest of what the source model depends on: settings, data, network code."""
    settings = {k: v for k, v in spec.to_dict().items() if k not in IGNORED_KEYS}
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(tree_digest(Path(spec.train_dir), Path(spec.val_dir)).encode())
    for source in NETWORK_SOURCES:
        h.update(hashlib.sha256(source.read_bytes()).digest())
    return h.hexdigest()


def slot(pretrained: Path, digest: str) -> tuple[Path, Path]:
    """(checkpoint, record) of the cache slot for ``digest``, beside ``pretrained``."""
    stem = pretrained.parent / f"source-{digest[:16]}"
    return stem.with_suffix(".ckpt"), stem.with_suffix(".json")


def cached(pretrained: Path, digest: str) -> dict | None:
    """The record of a complete cached source model for ``digest``, or None."""
    ckpt, record = slot(pretrained, digest)
    try:
        doc = json.loads(record.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if doc.get("digest") != digest or not ckpt.is_file():
        return None
    return doc


def store(pretrained: Path, digest: str, best_ckpt: Path, record: dict) -> None:
    """Keep ``best_ckpt`` in the slot for ``digest``; the record is written last."""
    ckpt, record_path = slot(pretrained, digest)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    record_path.unlink(missing_ok=True)  # a crash below leaves no record: the slot is redone
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.copyfile(best_ckpt, tmp)
    os.replace(tmp, ckpt)
    write_atomic(record_path, json.dumps({"digest": digest, **record}, indent=2) + "\n")


def source_model(spec, pretrained: Path, fresh: bool,
                 train: Callable[[object], Path | None],
                 best_of: Callable[[Path], tuple[float, int]]) -> bool:
    """Put the source model at ``pretrained``: from the cache, or by ``train(spec)``.

    ``train`` runs the job and returns its run directory (None on failure); ``best_of`` reads
    (best val acc, epoch) from a run directory. False when training failed.
    """
    digest = source_digest(spec)
    doc = None if fresh else cached(pretrained, digest)
    if doc is None:
        run_dir = train(spec)
        if run_dir is None:
            return False
        acc, epoch = best_of(run_dir)
        doc = {"run_dir": str(run_dir), "val_acc": acc, "epoch": epoch}
        store(pretrained, digest, run_dir / BEST_CKPT, doc)
        verb = "trained"
    else:
        verb = "reused (same settings and data; --fresh retrains) from"
    pretrained.parent.mkdir(parents=True, exist_ok=True)
    tmp = pretrained.with_name(pretrained.name + ".tmp")
    shutil.copyfile(slot(pretrained, digest)[0], tmp)
    os.replace(tmp, pretrained)
    log.info(f"source model: val acc {doc['val_acc']:.4f} (epoch {doc['epoch']}), {verb} "
             f"{doc['run_dir']} -> {pretrained}")
    return True
