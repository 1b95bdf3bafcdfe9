"""Pretrained checkpoints: drop the head, load the rest, report; atomic saves (freezing:
src/training/transfer.py).

A Model Zoo checkpoint may be a bare network (`conv1.weight`, ..., `end_point.bias`) or a
training checkpoint that also holds `moments.<param>` for every trainable parameter and scalars
such as `epoch_num` and `step_num`. Both load.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import mindspore as ms
from mindspore import nn

from launcher.core.errors import UserError
from src.model.heads import head_cell
from src.training.transfer import apply_freeze


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



def head_parameter_names(net: nn.Cell, head: str) -> list[str]:
    return [p.name for p in head_cell(net, head).get_parameters()]


def filter_checkpoint_parameter_by_list(origin_dict: dict, param_filter: list[str]) -> list[str]:
    """Delete every entry whose name contains one of `param_filter` (so `moments.end_point.weight`
    goes with `end_point.weight`), printing each deletion as the tutorial does."""
    deleted = head_entries(list(origin_dict), param_filter)
    for key in deleted:
        print("Delete parameter from checkpoint: ", key, flush=True)
        del origin_dict[key]
    return deleted


PRETRAINED_FIX = ("is it a MindSpore .ckpt file? Set `pretrained` to another file, or \"\" to "
                  "train from scratch")


def read_checkpoint(path: str | Path, fix: str = PRETRAINED_FIX) -> dict:
    """The checkpoint's entries; a UserError naming the file and `fix` when it cannot be read."""
    try:
        return ms.load_checkpoint(str(path))
    except Exception as e:  # noqa: BLE001 (MindSpore raises ValueError, RuntimeError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} cannot be read ({first[:200]}); {fix}") from None


@dataclass
class Fit:
    """How a checkpoint's entries (after head filtering) meet a network's parameters."""
    loaded: list[str] = field(default_factory=list)       # network parameters the file sets
    missing: list[str] = field(default_factory=list)      # network parameters the file lacks
    unused: list[str] = field(default_factory=list)       # file entries the network has no use for
    mismatched: list[str] = field(default_factory=list)   # "name: file (..), network (..)"
    backbone_missing: list[str] = field(default_factory=list)  # missing and not in the head

    def problems(self, path: str | Path, arch: str = "") -> list[str]:
        """What keeps the checkpoint from loading, as messages naming the parameters and the fix."""
        for_arch = f" (arch = {arch!r})" if arch else ""
        out = []
        if self.mismatched:
            out.append(f"checkpoint {path} does not fit the network{for_arch}: "
                       f"{len(self.mismatched)} shape mismatch(es), first: "
                       f"{'; '.join(self.mismatched[:3])}. Is the checkpoint for another arch?")
        if self.backbone_missing:
            out.append(f"checkpoint {path} lacks {len(self.backbone_missing)} backbone "
                       f"parameter(s) of the network{for_arch}, first: "
                       f"{', '.join(self.backbone_missing[:5])}. Use a checkpoint of the same "
                       "arch, or pretrained = \"\" to train from scratch")
        return out


def head_entries(names, head_names: list[str]) -> list[str]:
    """The checkpoint entries the head filter drops: every name containing a head parameter's
    name (so `moments.end_point.weight` goes with `end_point.weight`)."""
    return [n for n in names if any(h in n for h in head_names)]


def check_fit(file_shapes: dict[str, tuple], net_shapes: dict[str, tuple],
              head_names: list[str]) -> Fit:
    """Pure: compare a checkpoint's {name: shape} with a network's, after dropping the head's
    entries from the file. Every non-head network parameter must come from the file with its
    shape."""
    dropped = set(head_entries(file_shapes, head_names))
    fit = Fit()
    for name, shape in file_shapes.items():
        if name in dropped:
            continue
        if name not in net_shapes:
            fit.unused.append(name)
        elif tuple(shape) != tuple(net_shapes[name]):
            fit.mismatched.append(f"{name}: file {tuple(shape)}, network "
                                  f"{tuple(net_shapes[name])}")
        else:
            fit.loaded.append(name)
    fit.missing = [n for n in net_shapes if n in dropped or n not in file_shapes]
    fit.backbone_missing = [n for n in fit.missing if n not in head_names]
    return fit


def shapes(params) -> dict[str, tuple]:
    """{name: shape} of a checkpoint dict or of a network's parameters."""
    items = params.items() if isinstance(params, dict) else ((p.name, p) for p in params)
    return {name: tuple(value.shape) for name, value in items}


def load_pretrained(net: nn.Cell, path: str | Path, head: str, arch: str = "") -> LoadReport:
    """Load `path` into `net` minus the head. Every non-head network parameter must come from
    the file with the right shape; otherwise a UserError names the parameters."""
    param_dict = read_checkpoint(path)
    head_names = head_parameter_names(net, head)
    deleted = filter_checkpoint_parameter_by_list(param_dict, head_names)
    fit = check_fit(shapes(param_dict), shapes(net.get_parameters()), head_names)
    problems = fit.problems(path, arch)
    if problems:
        raise UserError(problems[0])
    report = LoadReport(path=str(path), deleted=deleted, loaded=fit.loaded, missing=fit.missing,
                        unused=fit.unused)
    not_loaded = ms.load_param_into_net(net, {n: param_dict[n] for n in report.loaded})
    not_loaded = not_loaded[0] if isinstance(not_loaded, tuple) else not_loaded
    assert sorted(not_loaded) == sorted(report.missing), (not_loaded, report.missing)
    return report


def freeze_backbone(net: nn.Cell, head: str) -> list[str]:
    """fixed_feature (freeze = "all"): only the head trains, BatchNorm statistics included
    (see src/training/transfer.py). Returns the trainable names."""
    return apply_freeze(net, "all", head).names


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete what saves of `path` killed mid-write left behind: `.<stem>.tmp<pid>.ckpt` (ours)
    or `.<stem>.tmp<pid>.tmp` (MindSpore writes through one of its own), for pids no longer
    running. Checkpoints are hundreds of MB: a few kills would otherwise fill the disk."""
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.tmp(\d+)\.\w+")
    removed = []
    for leftover in path.parent.glob(f".{path.stem}.tmp*"):
        m = pattern.fullmatch(leftover.name)
        if m and not _pid_alive(int(m.group(1))):
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def save_atomic(save_obj, path: str | Path, append_dict: dict | None = None) -> None:
    """Write a checkpoint so that a kill at any moment leaves the previous file intact (and the
    next save removes the temporary files a killed one left)."""
    path = Path(path)
    remove_stale_temps(path)
    # save_checkpoint appends ".ckpt" to names without it: keep the suffix last.
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix or '.ckpt'}")
    try:
        ms.save_checkpoint(save_obj, str(tmp), append_dict=append_dict)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        if _out_of_space(e, path.parent):
            kept = f"the previous {path.name} is kept" if path.exists() else \
                f"no {path.name} was written"
            raise UserError(f"no space left on the device of {path.parent} while saving "
                            f"{path.name} ({kept}); free space there, then resume the run "
                            "(--resume)") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
        for leftover in path.parent.glob(f".{path.stem}.tmp{os.getpid()}*"):
            leftover.unlink(missing_ok=True)  # MindSpore's own temporary, on failure


def _out_of_space(error: BaseException, folder: Path) -> bool:
    """ENOSPC / EDQUOT, as an OSError or in MindSpore's RuntimeError text."""
    import errno
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    return "no space left" in text or "disk quota" in text
