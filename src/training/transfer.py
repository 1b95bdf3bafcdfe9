"""What a transfer-learning run trains: the frozen stages (`freeze`), the head's learning rate
(`head_lr_mult`) and the loss (`label_smoothing`).

Frozen means frozen: the parameters of a frozen stage get no gradient and its BatchNorm layers
stop updating their moving statistics (they normalise with the pretrained ones, in training as
in evaluation), so a frozen prefix is a fixed function of the image and can be cached
(src/training/feature_cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mindspore import nn

from src.model.heads import head_cell
from src.model.stages import HEAD, STAGES, STEM_CELLS, frozen_stages, stage_of

MAX_NAMES = 6  # parameter names listed per stage; the rest are counted


@dataclass
class StageParameters:
    stage: str
    trains: bool
    names: list[str] = field(default_factory=list)
    values: int = 0


@dataclass
class Trainable:
    """Which parameters train, by stage (BatchNorm moving statistics are not parameters that
    train; they are fixed exactly where the stage is frozen)."""
    freeze: str
    stages: list[StageParameters]

    @property
    def names(self) -> list[str]:
        return [n for s in self.stages if s.trains for n in s.names]

    def summary(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """A headline, then one indented line per stage."""
        total = sum(len(s.names) for s in self.stages)
        values = sum(s.values for s in self.stages)
        train_values = sum(s.values for s in self.stages if s.trains)
        frozen = [s.stage for s in self.stages if not s.trains and s.stage != HEAD]
        bn = (f"BatchNorm statistics of {frozen[0]}..{frozen[-1]} fixed" if len(frozen) > 1 else
              f"BatchNorm statistics of {frozen[0]} fixed" if frozen else
              "all BatchNorm statistics update")
        lines = [(f"freeze = {self.freeze!r}: {len(self.names)} of {total} parameters train "
                  f"({_count(train_values)} of {_count(values)} values); {bn}")]
        for s in self.stages:
            if not s.names:
                continue
            head = f"  {s.stage:<7} {'trains' if s.trains else 'frozen'} {len(s.names):>4} " \
                   f"parameter(s), {_count(s.values)} values"
            if s.trains:
                shown = ", ".join(s.names[:MAX_NAMES])
                more = f" (+{len(s.names) - MAX_NAMES} more)" if len(s.names) > MAX_NAMES else ""
                head += f": {shown}{more}"
            lines.append(head)
        return lines


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 100_000 else str(n)


def stage_cells(net: nn.Cell, stage: str) -> list[nn.Cell]:
    if stage == "stem":
        return [getattr(net, name) for name in STEM_CELLS]
    return [getattr(net, stage)]


def apply_freeze(net: nn.Cell, freeze: str, head: str) -> Trainable:
    """Freeze `net` up to and including `freeze` ("all": everything but the head `head`);
    returns which parameters train."""
    head_obj = head_cell(net, head)  # a wrong head name fails here
    if freeze == "all":
        keep = {id(p) for p in head_obj.get_parameters()}
        keep_cells = {id(c) for _, c in head_obj.cells_and_names()}
        frozen_params = [p for p in net.get_parameters() if id(p) not in keep]
        frozen_cells = [c for _, c in net.cells_and_names() if id(c) not in keep_cells]
    else:
        roots = [c for stage in frozen_stages(freeze) for c in stage_cells(net, stage)]
        frozen_params = [p for c in roots for p in c.get_parameters()]
        frozen_cells = [sub for c in roots for _, sub in c.cells_and_names()]
    for p in frozen_params:
        p.requires_grad = False
    for cell in frozen_cells:
        if isinstance(cell, nn.BatchNorm2d):
            cell.use_batch_statistics = False
    return trainable(net, freeze, head)


def trainable(net: nn.Cell, freeze: str, head: str) -> Trainable:
    """The network's trainable parameters (weights, BatchNorm gamma/beta) by stage."""
    head_names = {p.name for p in head_cell(net, head).get_parameters()}
    order = list(STAGES) + ["other", HEAD]
    by_stage = {s: StageParameters(s, False) for s in order}
    for p in net.get_parameters():
        if p.name.endswith((".moving_mean", ".moving_variance")):
            continue
        stage = HEAD if p.name in head_names else stage_of(p.name, head)
        entry = by_stage[stage]
        entry.names.append(p.name)
        entry.values += int(p.size)
        entry.trains = entry.trains or p.requires_grad
    return Trainable(freeze, [by_stage[s] for s in order if by_stage[s].names])


def updating_bn_statistics(net: nn.Cell) -> list:
    """The BatchNorm moving statistics training changes (those of unfrozen stages): what data
    parallel ranks average at every epoch end."""
    out = []
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d) and cell.use_batch_statistics is not False:
            out += [cell.moving_mean, cell.moving_variance]
    return out


def parameter_groups(net: nn.Cell, head: str, lr, head_lr_mult: float):
    """The optimizer's parameters: every trainable one at `lr` (a float or a per-step Tensor),
    the head's at lr x head_lr_mult."""
    params = net.trainable_params()
    if head_lr_mult == 1.0:
        return params
    head_ids = {id(p) for p in head_cell(net, head).get_parameters()}
    body = [p for p in params if id(p) not in head_ids]
    head_params = [p for p in params if id(p) in head_ids]
    groups = [{"params": body, "lr": lr}] if body else []
    return groups + [{"params": head_params, "lr": lr * head_lr_mult}]


def group_multipliers(groups: list, head_lr_mult: float) -> list[float] | None:
    """Each parameter group's multiple of the learning rate, in the order of `groups`
    (parameter_groups: the head's group last); None without groups."""
    if not groups or not isinstance(groups[0], dict):
        return None
    return [1.0] * (len(groups) - 1) + [head_lr_mult]


def loss_fn(label_smoothing: float) -> nn.Cell:
    """Mean cross-entropy on sparse labels, smoothed when label_smoothing > 0."""
    if label_smoothing > 0:
        return nn.CrossEntropyLoss(reduction="mean", label_smoothing=label_smoothing)
    return nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
