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
import os
import sys
import time
from pathlib import Path
from typing import Callable

from mindspore.train.callback import Callback

from launcher.metrics import best_row, metrics_text
from launcher.rundir import write_atomic
from launcher.runfiles import BEST_CKPT, CONSOLE_TTY_ENV, LAST_CKPT, METRICS
from src.checkpoint import save_atomic


def _as_float(loss) -> float:
    if isinstance(loss, (tuple, list)):
        loss = loss[0]
    return float(loss.asnumpy()) if hasattr(loss, "asnumpy") else float(loss)


class Progress:
    """Within-epoch progress of the main rank: steps done, loss, images/s, ETA.

    On a terminal (the launcher sets PACKRUN_CONSOLE_TTY=1 when its console is one: the worker's
    own stdout is always a pipe) one line is rewritten with `\r` every `tty_interval_s` and ended
    with a newline at the epoch's last step. Otherwise (logs, Slurm output) a plain line every
    `interval_s` seconds, so a long epoch is never silent and a log never fills with updates.
    """

    def __init__(self, steps: int, images_per_step: int, interval_s: float = 10.0,
                 tty: bool | None = None, tty_interval_s: float = 0.2, out=None):
        self.steps, self.images_per_step = steps, images_per_step
        self.tty = os.environ.get(CONSOLE_TTY_ENV) == "1" if tty is None else tty
        self.interval_s = tty_interval_s if self.tty else interval_s
        self.out = out or sys.stdout
        self.restart()

    def restart(self):
        self.start = self.last = time.monotonic()
        self.first: tuple[int, float] | None = None  # (steps done, time) at this epoch's 1st step

    def line(self, done: int, loss: float, epoch: int, epochs: int, elapsed: float,
             steady: tuple[int, float] | None = None) -> str:
        """The progress text. Speed and ETAs come from the steps after the epoch's first
        (`steady` = (steps, seconds) since it): the first step of a run compiles the graph and
        each epoch's first waits for the input pipeline. Evaluation is not included."""
        if not steady or steady[0] <= 0:
            return (f"  epoch {epoch}/{epochs} step {done}/{self.steps}  loss {loss:.4f}  "
                    f"first step {_duration(elapsed)} (graph compile / data start)  "
                    "ETA after the next step")
        per_step = steady[1] / steady[0]
        epoch_eta = (self.steps - done) * per_step
        run_eta = epoch_eta + (epochs - epoch) * self.steps * per_step
        return (f"  epoch {epoch}/{epochs} step {done}/{self.steps}  loss {loss:.4f}  "
                f"{self.images_per_step / per_step:.1f} img/s  "
                f"ETA epoch {_duration(epoch_eta)}, run {_duration(run_eta)}")

    def step(self, done: int, loss: float, epoch: int, epochs: int):
        now = time.monotonic()
        if self.first is None:
            self.first = (done, now)
        last_step = done >= self.steps
        if now - self.last < self.interval_s and not (self.tty and last_step):
            return
        if last_step and not self.tty:
            return  # the epoch summary follows at once
        self.last = now
        steady = (done - self.first[0], now - self.first[1])
        text = self.line(done, loss, epoch, epochs, max(now - self.start, 1e-9), steady)
        if self.tty:
            # pad over a longer previous line; the epoch's last step ends the line
            self.out.write(f"\r{text:<100}" + ("\n" if last_step else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


def _duration(seconds: float) -> str:
    """`42 s`, `3m05s`, `2h07m`: short enough for a progress line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class EvalCallBack(Callback):
    """Per epoch: mean train loss, evaluation, best.ckpt, last.ckpt, metrics.jsonl; per step:
    progress and the preemption check.

    Only the main rank prints the epoch block and writes files. `evaluate_fn()` returns the
    validation accuracy; it runs on the main rank, or on every rank when `eval_on_all_ranks`
    (sharded evaluation is a collective). `should_stop()` is called by every rank after every
    step and must return the same answer on all of them (see src/collective.any_rank);
    `end_of_epoch_sync()` is called by every rank at every epoch end (BatchNorm statistics).
    `resume_state()` returns what last.ckpt holds (network + optimizer parameters).
    The epoch number is `epoch_offset + cur_epoch_num`: the trainer may call Model.train once
    per epoch (offset = epoch - 1) or once for all epochs (offset 0).
    """

    def __init__(self, *, run_dir: Path, epochs: int, steps_per_epoch: int, images_per_step: int,
                 evaluate_fn: Callable[[], float], network, is_main: bool,
                 eval_on_all_ranks: bool = False, eval_interval: int = 1,
                 eval_start_epoch: int = 1, lr_at: Callable[[int], float] | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 end_of_epoch_sync: Callable[[], None] = lambda: None,
                 resume_state: Callable[[], list] | None = None,
                 history: list[dict] | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.images_per_step = images_per_step
        self.evaluate_fn, self.network, self.is_main = evaluate_fn, network, is_main
        self.eval_on_all_ranks = eval_on_all_ranks
        self.interval, self.eval_start_epoch = eval_interval, eval_start_epoch
        self.lr_at, self.should_stop, self.resume_state = lr_at, should_stop, resume_state
        self.end_of_epoch_sync = end_of_epoch_sync
        self.history = list(history or [])
        best = best_row(self.history)
        self.best_res = best["val_acc"] if best else 0.0
        self.best_epoch = best["epoch"] if best else 0
        self.progress = Progress(steps_per_epoch, images_per_step)
        self.epoch_offset = 0
        self.stopped_at: tuple[int, int] | None = None  # (epoch, step) of a requested stop
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
        epoch = self.epoch_offset + cb.cur_epoch_num
        loss = _as_float(cb.net_outputs)
        self._losses.append(loss)
        done = (cb.cur_step_num - 1) % self.steps_per_epoch + 1
        if self.is_main:
            self.progress.step(done, loss, epoch, self.epochs)
        if self.should_stop():
            self.stopped_at = (epoch, done)
            run_context.request_stop()

    def on_train_epoch_end(self, run_context):
        if self.stopped_at is not None:
            return  # an interrupted epoch is neither evaluated nor recorded: it reruns on resume
        cb = run_context.original_args()
        epoch = self.epoch_offset + cb.cur_epoch_num
        train_time = time.monotonic() - self._epoch_start
        if not self._losses:  # sink mode reports once per epoch
            self._losses.append(_as_float(cb.net_outputs))
        train_loss = sum(self._losses) / len(self._losses)
        if not math.isfinite(train_loss):
            print(f"warning: train loss is {train_loss} in epoch {epoch}; lower lr?", flush=True)
        self.end_of_epoch_sync()  # every rank, before the main rank evaluates and saves
        val_acc, eval_time = None, 0.0
        if self.is_eval_epoch(epoch) and (self.is_main or self.eval_on_all_ranks):
            t0 = time.monotonic()
            val_acc = float(self.evaluate_fn())
            eval_time = time.monotonic() - t0
        if self.is_main:
            self._record(epoch, train_loss, train_time, val_acc, eval_time)

    def _record(self, epoch, train_loss, train_time, val_acc, eval_time):
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
        # metrics first, then last.ckpt: a resume trusts rows only up to last.ckpt's epoch
        write_atomic(self.run_dir / METRICS, metrics_text(self.history))
        if self.resume_state is not None:
            save_atomic(self.resume_state(), self.run_dir / LAST_CKPT, append_dict={"epoch": epoch})

    def closing_line(self) -> str:
        return (f"End training, the best acc is: {self.best_res}, "
                f"the best acc epoch is {self.best_epoch}")
