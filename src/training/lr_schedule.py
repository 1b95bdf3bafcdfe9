"""Per-step learning rates: constant (the tutorial) or cosine, with optional linear warm-up, and
how a schedule reaches the optimizer.

Two ways, the same rates:
- in the graph (Ascend and GPU, where sink mode runs steps on the device without the host, and
  PYNATIVE_MODE): the optimizer gathers step `global_step` of an epochs x steps tensor
  (MindSpore's dynamic lr);
- from the host (`StepRates`, on CPU in GRAPH_MODE, which never sinks:
  launcher/core/compile_cache.schedule_from_host): the optimizer holds a
  scalar learning rate (a Parameter, as for a constant lr) and the host sets it to the step's
  rate before each step. Its graphs are then those of a constant lr: the schedule, its length
  (epochs x steps) and its values are data, so a run that changes only them reuses the compiled
  graphs (launcher/core/compile_cache.py). (In PYNATIVE_MODE MindSpore 2.10's Momentum does not
  see a learning-rate Parameter set after its first step, and there are no graphs to reuse.)
"""

from __future__ import annotations

import math

from mindspore.train.callback import Callback


def learning_rates(base_lr: float, schedule: str, epochs: int, steps_per_epoch: int,
                   warmup_epochs: int = 0) -> list[float]:
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    rates = []
    for step in range(total):
        if step < warmup:
            rates.append(base_lr * (step + 1) / warmup)
        elif schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            rates.append(0.5 * base_lr * (1 + math.cos(math.pi * progress)))
        else:
            rates.append(base_lr)
    return rates


def learning_rate_parameters(opt) -> list:
    """The optimizer's scalar learning-rate Parameters, each once: `learning_rate`, or with
    parameter groups `learning_rate_group_<i>` for group i (none for an in-graph schedule)."""
    from mindspore import Parameter
    lr = opt.learning_rate
    if isinstance(lr, Parameter):
        return [lr]
    found = [p for p in lr if isinstance(p, Parameter)] if isinstance(lr, tuple) else []
    return list({p.name: p for p in found}.values())  # a group's Parameter once per member


class StepRates(Callback):
    """Before every training step, the optimizer's learning rate(s) become the schedule's rate
    at the optimizer's own step counter (`global_step`, which last.ckpt restores on a resume),
    as float32 numbers: `rates[i]` for the whole network, or per parameter group i
    `rates x group_multipliers[i]` (a head trained at head_lr_mult times the rate), multiplied in
    float32 as MindSpore multiplies a per-step rate tensor, so the rates equal the in-graph
    schedule's bit for bit (tests/src/training/test_lr_schedule.py)."""

    def __init__(self, opt, rates: list[float], group_multipliers: list[float] | None = None):
        import numpy as np
        super().__init__()
        base = np.asarray(rates, np.float32)
        params = learning_rate_parameters(opt)
        if group_multipliers is None:
            if len(params) != 1:
                raise ValueError(f"{len(params)} learning-rate parameters and no group multipliers")
            self.targets = [(params[0], base)]
        else:
            by_name = {p.name: p for p in params}
            self.targets = [(by_name[f"learning_rate_group_{i}"], base * np.float32(m))
                            for i, m in enumerate(group_multipliers)]
        self.global_step = opt.global_step

    def on_train_step_begin(self, run_context):
        from mindspore import Tensor
        step = int(self.global_step.asnumpy().reshape(-1)[0])
        for param, rates in self.targets:
            param.set_data(Tensor(rates[min(step, len(rates) - 1)]))  # past the end: the last
