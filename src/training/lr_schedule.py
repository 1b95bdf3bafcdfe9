"""Per-step learning rates: constant (the tutorial) or cosine, with optional linear warm-up."""

from __future__ import annotations

import math


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
