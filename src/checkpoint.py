"""Pretrained checkpoints: drop the head, load the rest, report, freeze; atomic saves.

A Model Zoo checkpoint may be a bare network (`conv1.weight`, ..., `end_point.bias`) or a
training checkpoint that also holds `moments.<param>` for every trainable parameter and scalars
such as `epoch_num` and `step_num`. Both load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import mindspore as ms
from mindspore import nn

from launcher.errors import UserError


@dataclass
class LoadReport:
    path: str
    deleted: list[str] = field(default_factory=list)      # head entries dropped from the file
    loaded: list[str] = field(default_factory=list)       # network parameters set from the file
    missing: list[str] = field(default_factory=list)      # network parameters the file lacked
    unused: list[str] = field(default_factory=list)       # file entries the network has no use for

    def summary(self) -> str:
        moments = sum(1 for n in self.unused if n.startswith("moments."))
        others = [n for n in self.unused if not n.startswith("moments.")]
        lines = [f"Loaded {len(self.loaded)} parameters from {self.path}",
                 f"  re-initialised (head): {', '.join(self.missing) or 'none'}"]
        ignored = ([f"{moments} optimizer moments"] if moments else []) + others
        if ignored:
            lines.append(f"  ignored from the file: {', '.join(ignored)}")
        return "\n".join(lines)


def head_cell(net: nn.Cell, head: str) -> nn.Cell:
    cells = dict(net.cells_and_names())
    if head not in cells or head == "":
        heads = [n for n, c in cells.items() if isinstance(c, nn.Dense)]
        raise UserError(f"job key 'head' is {head!r}, which is not a cell of this network; "
                        f"its classifier cells are: {', '.join(heads) or 'none'}")
    return cells[head]


def head_parameter_names(net: nn.Cell, head: str) -> list[str]:
    return [p.name for p in head_cell(net, head).get_parameters()]


def filter_checkpoint_parameter_by_list(origin_dict: dict, param_filter: list[str]) -> list[str]:
    """Delete every entry whose name contains one of `param_filter` (so `moments.end_point.weight`
    goes with `end_point.weight`), printing each deletion as the tutorial does."""
    deleted = []
    for key in list(origin_dict):
        if any(name in key for name in param_filter):
            print("Delete parameter from checkpoint: ", key, flush=True)
            del origin_dict[key]
            deleted.append(key)
    return deleted


def read_checkpoint(path: str | Path) -> dict:
    try:
        return ms.load_checkpoint(str(path))
    except Exception as e:  # MindSpore raises ValueError/RuntimeError with long C++ traces
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} cannot be read ({first[:200]}); is it a MindSpore "
                        ".ckpt file? Set `pretrained` to another file, or \"\" to train from "
                        "scratch") from None


def load_pretrained(net: nn.Cell, path: str | Path, head: str, arch: str = "") -> LoadReport:
    """Load `path` into `net` minus the head. Every non-head network parameter must come from
    the file with the right shape; otherwise a UserError names the parameters."""
    param_dict = read_checkpoint(path)
    report = LoadReport(path=str(path))
    head_names = head_parameter_names(net, head)
    report.deleted = filter_checkpoint_parameter_by_list(param_dict, head_names)
    wanted = {p.name: p for p in net.get_parameters()}

    mismatched = []
    for name, value in param_dict.items():
        if name not in wanted:
            report.unused.append(name)
        elif tuple(value.shape) != tuple(wanted[name].shape):
            mismatched.append(f"{name}: file {tuple(value.shape)}, network "
                              f"{tuple(wanted[name].shape)}")
        else:
            report.loaded.append(name)
    for_arch = f" (arch = {arch!r})" if arch else ""
    if mismatched:
        raise UserError(f"checkpoint {path} does not fit the network{for_arch}: "
                        f"{len(mismatched)} shape mismatch(es), first: {'; '.join(mismatched[:3])}."
                        " Is the checkpoint for another arch?")
    report.missing = [n for n in wanted if n not in param_dict]
    backbone_missing = [n for n in report.missing if n not in head_names]
    if backbone_missing:
        raise UserError(f"checkpoint {path} lacks {len(backbone_missing)} backbone parameter(s) of "
                        f"the network{for_arch}, first: {', '.join(backbone_missing[:5])}. Use a "
                        "checkpoint of the same arch, or pretrained = \"\" to train from scratch")
    not_loaded = ms.load_param_into_net(net, {n: param_dict[n] for n in report.loaded})
    not_loaded = not_loaded[0] if isinstance(not_loaded, tuple) else not_loaded
    assert sorted(not_loaded) == sorted(report.missing), (not_loaded, report.missing)
    return report


def freeze_backbone(net: nn.Cell, head: str) -> list[str]:
    """fixed_feature: only the head trains. Frozen BatchNorm layers also stop updating their
    moving statistics (the tutorial's freeze still lets them drift), so the backbone is truly
    fixed and its features are a function of the image alone. Returns the trainable names."""
    head_obj = head_cell(net, head)
    head_ids = {id(p) for p in head_obj.get_parameters()}
    for p in net.get_parameters():
        if id(p) not in head_ids:
            p.requires_grad = False
    head_subcells = {id(c) for _, c in head_obj.cells_and_names()}
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d) and id(cell) not in head_subcells:
            cell.use_batch_statistics = False
    return [p.name for p in net.trainable_params()]


def save_atomic(save_obj, path: str | Path, append_dict: dict | None = None) -> None:
    """Write a checkpoint so that a kill at any moment leaves the previous file intact."""
    path = Path(path)
    # save_checkpoint appends ".ckpt" to names without it: keep the suffix last.
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix or '.ckpt'}")
    try:
        ms.save_checkpoint(save_obj, str(tmp), append_dict=append_dict)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
