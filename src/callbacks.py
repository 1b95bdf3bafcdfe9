"""Training callbacks: the tutorial's per-epoch block, best checkpoint, metrics.jsonl, progress.

Output a user of the tutorial recognises, per evaluated epoch:

    Epoch 1/20
    ----------
    train Loss: 0.47486544
    val Acc: 0.8333333333333334
    epoch time: 8439.054 ms, per step time: 140.651 ms

and at the end `End training, the best acc is: 0.95, the best acc epoch is 12`.
`train Loss` is the mean over the epoch's steps (the tutorial printed the last step's loss,
which jumps around); epoch time excludes evaluation, as the tutorial's TimeMonitor did.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from mindspore.train.callback import Callback

from launcher.metrics import METRICS_FILE, best_row, metrics_text
from launcher.rundir import write_atomic
from src.checkpoint import save_atomic

BEST_CKPT = "best.ckpt"


def _as_float(loss) -> float:
    if isinstance(loss, (tuple, list)):
        loss = loss[0]
    return float(loss.asnumpy()) if hasattr(loss, "asnumpy") else float(loss)


class Progress:
    """Within-epoch progress: a line every `interval_s` seconds (logs and Slurm output read
    fine, and a long epoch is never silent)."""

    def __init__(self, steps: int, images_per_step: int, interval_s: float = 10.0):
        self.steps, self.images_per_step, self.interval_s = steps, images_per_step, interval_s
        self.start = self.last = time.monotonic()

    def restart(self):
        self.start = self.last = time.monotonic()

    def step(self, done: int, loss: float, epoch: int, epochs: int):
        now = time.monotonic()
        if now - self.last < self.interval_s or done >= self.steps:
            return
        self.last = now
        rate = done * self.images_per_step / (now - self.start)
        eta = (self.steps - done) * (now - self.start) / done
        print(f"  epoch {epoch}/{epochs} step {done}/{self.steps}  loss {loss:.4f}  "
              f"{rate:.1f} img/s  epoch ETA {eta:.0f} s", flush=True)


class EvalCallBack(Callback):
    """Per epoch: mean train loss, evaluation (on the main rank), best.ckpt, metrics.jsonl.

    `evaluate_fn()` returns the validation accuracy; it is only called on the main rank
    (`is_main`), which is also the only rank that writes files.
    """

    def __init__(self, *, run_dir: Path, epochs: int, steps_per_epoch: int, images_per_step: int,
                 evaluate_fn: Callable[[], float], network, is_main: bool, eval_interval: int = 1,
                 eval_start_epoch: int = 1, lr_at: Callable[[int], float] | None = None,
                 metrics_name: str = "acc", history: list[dict] | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.images_per_step = images_per_step
        self.evaluate_fn, self.network, self.is_main = evaluate_fn, network, is_main
        self.interval, self.eval_start_epoch = eval_interval, eval_start_epoch
        self.lr_at = lr_at
        self.metrics_name = metrics_name
        self.history = list(history or [])
        best = best_row(self.history)
        self.best_res = best["val_acc"] if best else 0.0
        self.best_epoch = best["epoch"] if best else 0
        self.progress = Progress(steps_per_epoch, images_per_step)
        self._losses: list[float] = []
        self._epoch_start = 0.0

    def is_eval_epoch(self, epoch: int) -> bool:
        return epoch >= self.eval_start_epoch and (epoch - self.eval_start_epoch) % self.interval == 0

    def on_train_epoch_begin(self, run_context):
        self._losses = []
        self._epoch_start = time.monotonic()
        self.progress.restart()

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        loss = _as_float(cb.net_outputs)
        self._losses.append(loss)
        if self.is_main:
            done = (cb.cur_step_num - 1) % self.steps_per_epoch + 1
            self.progress.step(done, loss, cb.cur_epoch_num, self.epochs)

    def on_train_epoch_end(self, run_context):
        cb = run_context.original_args()
        epoch = cb.cur_epoch_num
        train_time = time.monotonic() - self._epoch_start
        if not self._losses:  # sink mode reports once per epoch
            self._losses.append(_as_float(cb.net_outputs))
        train_loss = sum(self._losses) / len(self._losses)
        if not math.isfinite(train_loss):
            print(f"warning: train loss is {train_loss} in epoch {epoch}; lower lr?", flush=True)
        if not self.is_main:
            return
        val_acc, eval_time = None, 0.0
        if self.is_eval_epoch(epoch):
            t0 = time.monotonic()
            val_acc = float(self.evaluate_fn())
            eval_time = time.monotonic() - t0
        step_ms = 1000.0 * train_time / self.steps_per_epoch
        print(f"Epoch {epoch}/{self.epochs}", flush=True)
        print("-" * 10)
        print(f"train Loss: {train_loss}")
        if val_acc is not None:
            print(f"val Acc: {val_acc}")
        print(f"epoch time: {1000.0 * train_time:.3f} ms, per step time: {step_ms:.3f} ms",
              flush=True)
        if val_acc is not None and val_acc >= self.best_res:
            self.best_res, self.best_epoch = val_acc, epoch
            save_atomic(self.network, self.run_dir / BEST_CKPT,
                        append_dict={"epoch": epoch, "val_acc": val_acc})
        row = {
            "epoch": epoch, "train_loss": train_loss, "val_acc": val_acc,
            "best_acc": self.best_res, "best_epoch": self.best_epoch,
            "epoch_time_s": round(train_time, 4), "eval_time_s": round(eval_time, 4),
            "step_time_ms": round(step_ms, 3),
            "images_per_s": round(self.steps_per_epoch * self.images_per_step / train_time, 2),
            "steps": self.steps_per_epoch,
        }
        if self.lr_at is not None:
            row["lr"] = self.lr_at(epoch * self.steps_per_epoch - 1)
        self.history.append(row)
        write_atomic(self.run_dir / METRICS_FILE, metrics_text(self.history))

    def on_train_end(self, run_context):
        if self.is_main:
            print("End training, the best {0} is: {1}, the best {0} epoch is {2}".format(
                self.metrics_name, self.best_res, self.best_epoch), flush=True)

