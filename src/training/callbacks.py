"""Training callbacks, one job each: `Report` (the progress record of every step and stage,
the tutorial's per-epoch block, evaluation, metrics.jsonl), `Checkpoint` (best.ckpt, last.ckpt
at every epoch end and at a requested stop) and `StopOnRequest` (the per-step stop check). They
share a `Position`: the epoch and step training is at, which the trainer sets when it (re)starts
an epoch and the failure report (launcher/core/rundir/failure.py) reads.

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

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mindspore.train.callback import Callback

from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.metrics import best_row, metrics_text
from launcher.core.rundir.names import BEST_CKPT, CONSOLE_TTY_ENV, LAST_CKPT, LAST_POINT, METRICS
from launcher.core.rundir.progress import Event, Stage
from launcher.core.rundir.progress import Progress as Record
from src.training.checkpoint import save_atomic
from src.training.progress import Recorder


def _as_float(loss) -> float:
    if isinstance(loss, (tuple, list)):
        loss = loss[0]
    return float(loss.asnumpy()) if hasattr(loss, "asnumpy") else float(loss)


class ProgressLine:
    """Within-epoch progress of the main rank on the console: steps done, loss, images/s, ETA.
    It reads the progress record (`listen`, a Recorder listener).

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

    def listen(self, epochs: int) -> Callable[[Record], None]:
        """A Recorder listener that prints the line for the training steps' records."""
        def on_record(record: Record) -> None:
            if record.event is Event.STEP and record.loss is not None:
                self.step(record.step, record.loss, record.epoch, epochs)
        return on_record

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


@dataclass
class Position:
    """Where training is. `epoch` (1-based) is the epoch being trained, `step` the steps of it
    done. The trainer calls `begin_epoch` before each Model.train of an epoch, with the steps a
    resumed epoch had already done (`skipped`); Model.train's own step counter starts at 1 again
    every call, so `steps_done(cb)` adds them."""
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0
    skipped: int = 0
    stopped_at: tuple[int, int] | None = None  # (epoch, step) of a requested stop

    def begin_epoch(self, epoch: int, skipped: int = 0) -> None:
        self.epoch, self.step, self.skipped = epoch, skipped, skipped

    def steps_done(self, cb) -> int:
        self.step = self.skipped + cb.cur_step_num
        return self.step

    @property
    def epoch_complete(self) -> bool:
        """All steps of the epoch trained (a stop request at its last step included: the epoch
        end then evaluates and saves as usual)."""
        return self.step >= self.steps_per_epoch

    @property
    def stopped_mid_epoch(self) -> bool:
        return self.stopped_at is not None and self.stopped_at[1] < self.steps_per_epoch


@dataclass(frozen=True)
class Evaluation:
    """When and where validation runs. `evaluate_fn()` returns the accuracy; it runs on the main
    rank, or on every rank when `on_all_ranks` (sharded evaluation is a collective)."""
    evaluate_fn: Callable[[], float]
    on_all_ranks: bool = False
    interval: int = 1
    start_epoch: int = 1

    def due(self, epoch: int) -> bool:
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.interval == 0


@dataclass
class EpochRecord:
    """The interrupted or running epoch's losses and training time, kept in last.ckpt at a
    requested stop so that the resumed epoch's row equals an uninterrupted one's."""
    losses: list[float] = field(default_factory=list)
    train_time_s: float = 0.0


class Report(Callback):
    """Per step: the loss, and the rank's progress record (`recorder`; on the main rank the
    progress line listens to it). Per completed epoch: BatchNorm sync (`end_of_epoch_sync()`,
    every rank), evaluation, the tutorial's block and a metrics.jsonl row (main rank only prints
    and writes). `history` holds the rows of epochs done before a resume; `partial` the record
    of an epoch resumed mid-way."""

    def __init__(self, *, run_dir: Path, epochs: int, images_per_step: int, position: Position,
                 evaluation: Evaluation, is_main: bool,
                 lr_at: Callable[[int], float] | None = None,
                 end_of_epoch_sync: Callable[[], None] = lambda: None,
                 history: list[dict] | None = None, partial: EpochRecord | None = None,
                 recorder: Recorder | None = None):
        super().__init__()
        self.run_dir, self.epochs, self.images_per_step = Path(run_dir), epochs, images_per_step
        self.position, self.evaluation, self.is_main = position, evaluation, is_main
        self.steps_per_epoch = position.steps_per_epoch
        self.lr_at, self.end_of_epoch_sync = lr_at, end_of_epoch_sync
        self.history = list(history or [])
        best = best_row(self.history)
        self.best_res = best["val_acc"] if best else 0.0
        self.best_epoch = best["epoch"] if best else 0
        self.progress = ProgressLine(self.steps_per_epoch, images_per_step)
        self.recorder = recorder or Recorder(None, 0, 1)
        if is_main:
            self.recorder.subscribe(self.progress.listen(epochs))
        self._compiled = False  # the first Model.train of this process compiles the graph
        self.record = partial or EpochRecord()
        self.last_row: dict | None = None  # the row of the epoch that just ended
        # called with each new row once metrics.jsonl holds it (the TensorBoard writer)
        self.row_listeners: list[Callable[[dict], None]] = []
        self._started = 0.0

    def on_train_epoch_begin(self, run_context):
        self._started = time.monotonic()
        if self.position.step == self.position.skipped:  # a fresh (or resumed) epoch
            self.progress.restart()
        self.recorder.stage(Stage.TRAINING if self._compiled else Stage.COMPILING,
                            epoch=self.position.epoch, step=self.position.step,
                            steps_per_epoch=self.steps_per_epoch)
        self._compiled = True

    def on_train_end(self, run_context):
        if not self.position.epoch_complete:  # the epoch goes on in the next Model.train
            self.record.train_time_s += time.monotonic() - self._started

    def train_time(self) -> float:
        """This epoch's training time so far, across a resume."""
        return self.record.train_time_s + time.monotonic() - self._started

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        done = self.position.steps_done(cb)
        loss = _as_float(cb.net_outputs)
        self.record.losses.append(loss)
        self.recorder.step(self.position.epoch, done, self.steps_per_epoch, loss)

    def on_train_epoch_end(self, run_context):
        if not self.position.epoch_complete:
            return  # a sink chunk, or an interrupted epoch (it continues on resume)
        epoch, train_time = self.position.epoch, self.train_time()
        losses, self.record = self.record.losses, EpochRecord()
        train_loss = sum(losses) / len(losses)
        if not math.isfinite(train_loss):
            print(f"warning: train loss is {train_loss} in epoch {epoch}; lower lr?", flush=True)
        self.end_of_epoch_sync()  # every rank, before the main rank evaluates and saves
        val_acc, eval_time = None, 0.0
        due = self.evaluation.due(epoch)
        if due and (self.is_main or self.evaluation.on_all_ranks):
            self.recorder.stage(Stage.EVALUATING)
            t0 = time.monotonic()
            val_acc = float(self.evaluation.evaluate_fn())
            eval_time = time.monotonic() - t0
        elif due:  # the main rank evaluates; this one waits in the next collective
            self.recorder.stage(Stage.WAITING)
        if self.is_main:
            self._print_block(epoch, train_loss, train_time, val_acc)
            self._write_row(epoch, train_loss, train_time, val_acc, eval_time)

    def _print_block(self, epoch, train_loss, train_time, val_acc):
        step_ms = 1000.0 * train_time / self.steps_per_epoch
        print(f"Epoch {epoch}/{self.epochs}", flush=True)
        print("-" * 10)
        print(f"train Loss: {train_loss}")
        if val_acc is not None:
            print(f"val Acc: {val_acc}")
        print(f"epoch time: {1000.0 * train_time:.3f} ms, per step time: {step_ms:.3f} ms",
              flush=True)

    def _write_row(self, epoch, train_loss, train_time, val_acc, eval_time):
        if val_acc is not None and val_acc >= self.best_res:
            self.best_res, self.best_epoch = val_acc, epoch
        row = {
            "epoch": epoch, "train_loss": train_loss, "val_acc": val_acc,
            "best_acc": self.best_res, "best_epoch": self.best_epoch,
            "epoch_time_s": round(train_time, 4), "eval_time_s": round(eval_time, 4),
            "step_time_ms": round(1000.0 * train_time / self.steps_per_epoch, 3),
            "images_per_s": round(self.steps_per_epoch * self.images_per_step / train_time, 2),
            "steps": self.steps_per_epoch,
        }
        if self.lr_at is not None:
            row["lr"] = self.lr_at(epoch * self.steps_per_epoch - 1)
        self.history.append(row)
        self.last_row = row
        # metrics first, then last.ckpt (Checkpoint, after this callback): a resume trusts rows
        # only up to last.ckpt's epoch
        write_atomic(self.run_dir / METRICS, metrics_text(self.history))
        for listener in list(self.row_listeners):
            try:
                listener(row)
            except Exception as e:  # noqa: BLE001 - a viewer must never stop training
                self.row_listeners.remove(listener)
                print(f"warning: metrics row listener {getattr(listener, '__qualname__', listener)}"
                      f" failed and is off for the rest of the run: {e!r}", file=sys.stderr,
                      flush=True)

    def closing_line(self) -> str:
        return (f"End training, the best acc is: {self.best_res}, "
                f"the best acc epoch is {self.best_epoch}")


class AfterFirstStep(Callback):
    """Calls `then()` once, after this process's first training step (the compile cache keeps
    the train graph then: src/training/compile_cache.py)."""

    def __init__(self, then: Callable[[], None]):
        super().__init__()
        self.then: Callable[[], None] | None = then

    def on_train_step_end(self, run_context):
        if self.then is not None:
            then, self.then = self.then, None
            then()


class StopOnRequest(Callback):
    """After every step, `should_stop()` (called by every rank; it must answer the same on all
    of them, see src/collective.any_rank): when true, training stops after this step and
    `position.stopped_at` says where."""

    def __init__(self, should_stop: Callable[[], bool], position: Position):
        super().__init__()
        self.should_stop, self.position = should_stop, position

    def on_train_step_end(self, run_context):
        if self.should_stop():
            self.position.stopped_at = (self.position.epoch, self.position.step)
            if self.position.stopped_mid_epoch:
                run_context.request_stop()  # (at the last step the epoch ends by itself)


class Checkpoint(Callback):
    """best.ckpt when an epoch's accuracy is the best so far, last.ckpt after every epoch and at a
    requested stop (main rank writes). last.ckpt holds `resume_state()` (network + optimizer) and
    `epoch` (epochs completed); after a stop mid-epoch also `step` (steps of the next epoch done),
    that epoch's losses and training time, and every rank's own `rank_state` entries (BatchNorm
    statistics, which differ between ranks until the epoch end averages them). `on_best(epoch)`
    after best.ckpt is saved (the pictures keep that epoch's predictions)."""

    def __init__(self, *, run_dir: Path, network, is_main: bool, report: Report,
                 resume_state: Callable[[], list],
                 rank_state: Callable[[], dict] = lambda: {},
                 on_best: Callable[[int], None] = lambda epoch: None):
        super().__init__()
        self.run_dir, self.network, self.is_main = Path(run_dir), network, is_main
        self.report, self.resume_state, self.rank_state = report, resume_state, rank_state
        self.on_best = on_best

    def on_train_epoch_end(self, run_context):
        row = self.report.last_row
        if not self.report.position.epoch_complete or not self.is_main or row is None:
            return
        epoch = row["epoch"]
        self.report.recorder.stage(Stage.SAVING)
        if row["val_acc"] is not None and row["best_epoch"] == epoch:
            save_atomic(self.network, self.run_dir / BEST_CKPT,
                        append_dict={"epoch": epoch, "val_acc": row["val_acc"]})
            self.on_best(epoch)
        save_atomic(self.resume_state(), self.run_dir / LAST_CKPT, append_dict={"epoch": epoch})
        self._describe_last(epoch, 0)

    def _describe_last(self, epoch: int, step: int) -> None:
        """last.json: where last.ckpt resumes, for readers without MindSpore (packrun status)."""
        write_atomic(self.run_dir / LAST_POINT, json.dumps({"epoch": epoch, "step": step}) + "\n")

    def save_at_stop(self) -> None:
        """Every rank calls this after a requested stop (rank_state is a collective)."""
        import mindspore as ms
        import numpy as np
        epoch, step = self.report.position.stopped_at
        extra = self.rank_state()
        if not self.is_main:
            return
        self.report.recorder.stage(Stage.SAVING)
        record = self.report.record
        params = self.resume_state() + [{"name": k, "data": ms.Tensor(v)}
                                        for k, v in extra.items()]
        params.append({"name": "epoch_losses",
                       "data": ms.Tensor(np.asarray(record.losses, np.float32))})
        save_atomic(params, self.run_dir / LAST_CKPT,
                    append_dict={"epoch": epoch - 1, "step": step,
                                 "epoch_train_time_s": record.train_time_s})
        self._describe_last(epoch - 1, step)
