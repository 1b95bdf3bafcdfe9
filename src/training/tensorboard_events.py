"""TensorBoard event files of a run (rank 0 only): RUN_DIR/tb/ holds the curves, pictures and
the job; RUN_DIR/tb/hparams/ the run's HParams session. docs/tensorboard.md describes each tag.

What is written, and from where:
- per training step, every `log_every_steps` global steps: `train/loss`, `train/lr` (and
  `train/head_lr` when head_lr_mult is not 1), `train/images_per_s`, `train/step_time_s`, read
  from the ONE per-step progress record (`listen` is a src/training/progress.Recorder listener;
  the stall watchdog reads the same record from its file);
- per epoch, from its metrics.jsonl row (`epoch_row` is a Report row listener), at the global
  step that ends the epoch: `epoch/train_loss`, `epoch/epoch_time_s`, and for evaluated epochs
  `epoch/val_acc`, `epoch/best_acc`, `epoch/eval_time_s`;
- `job` (text): the resolved job.json, at the attempt's first step;
- `pictures/<name>` (images): the run's PNGs (src/pictures/run.py) at the end, curves also at
  a new best when that costs under 1% of the run (`PictureBudget`);
- the HParams session in tb/hparams/: the compared job keys (`compared_hparams`) with the
  metrics `hparams/best_acc` and `hparams/final_acc` (the last evaluated epoch's accuracy), and
  the session's end (success, or a stop that will resume).

Continuous across resumes and restarts: the x axis is the global training step, and every
attempt starts its files with TensorBoard's purge marker (a SessionLog START at the first step
it trains): whatever an earlier attempt wrote from that step on is hidden, so curves neither
repeat nor go backwards. Each attempt writes files of its own, named by start second, host,
attempt and pid: a restart within the same second never replaces the file before it.

Writes are synchronous, one write(2) each (no thread, no queue, no buffer): a kill -9 loses
nothing already written, and a written point costs under a millisecond (0.37 to 0.54 ms
measured by benchmarks/bench_tensorboard.py on a loaded machine, about 0.1% of a small CPU
step); each epoch end is fsynced. tensorboardX provides the record
checksum and the protos; neither TensorFlow nor PyTorch is needed. No MindSpore import.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from launcher.core.rundir.names import TB_DIR, TB_HPARAMS_DIR
from launcher.core.rundir.progress import Event, Progress

# The HParams metrics (scalars of the tb/hparams run).
BEST_ACC, FINAL_ACC = "hparams/best_acc", "hparams/final_acc"


def event_file_name(attempt: int, pid: int, now: float, host: str) -> str:
    """`events.out.tfevents.<second>.<host>.attempt<NNN>.<pid>`: TensorBoard reads a directory's
    files in name order, so a later attempt's file sorts after an earlier one's even within
    the same second (the attempt number is zero-padded)."""
    return f"events.out.tfevents.{int(now):010d}.{host}.attempt{attempt:03d}.{pid}"


class EventFile:
    """One event file (TFRecord framing, tensorboardX's checksum), written synchronously: every
    `write` is one unbuffered write(2), so the OS has it at once and a process killed right
    after loses nothing. `sync` (fsync) only where a node's loss matters: the epoch ends, the
    close (tensorboardX's own flush fsyncs every time: milliseconds per point)."""

    def __init__(self, directory: Path, attempt: int, purge_step: int | None, *,
                 clock: Callable[[], float] = time.time):
        from tensorboardX.proto.event_pb2 import Event as PbEvent
        from tensorboardX.proto.event_pb2 import SessionLog
        from tensorboardX.record_writer import masked_crc32c
        self._Event, self._crc, self.clock = PbEvent, masked_crc32c, clock
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / event_file_name(attempt, os.getpid(), clock(),
                                                socket.gethostname())
        # "x": never another attempt's file, even should two names ever meet
        self._file = open(self.path, "xb", buffering=0)
        self._write(PbEvent(wall_time=clock(), file_version="brain.Event:2"))
        if purge_step is not None:  # hides what earlier files hold from this step on
            self._write(PbEvent(wall_time=clock(), step=purge_step,
                                session_log=SessionLog(status=SessionLog.START)))
        self.sync()

    def _write(self, event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", self._crc(header)) + data
                         + struct.pack("<I", self._crc(data)))

    def write(self, summary, step: int) -> None:
        self._write(self._Event(wall_time=self.clock(), step=step, summary=summary))

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def scalars(values: dict[str, float]):
    """One Summary of simple scalar values (no numpy conversion: the per-step cost)."""
    from tensorboardX.proto.summary_pb2 import Summary
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(v))
                          for tag, v in values.items()])


def png_summary(tag: str, png: bytes):
    """An image Summary of a PNG as it is (no decoding and re-encoding)."""
    from tensorboardX.proto.summary_pb2 import Summary
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", png[16:24])
    image = Summary.Image(height=height, width=width, colorspace=4 if png[25] == 6 else 3,
                          encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def hparam_value(value):
    """A job value as HParams shows it: numbers, bools and strings as they are, lists and
    tables as JSON text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value if not isinstance(value, tuple) else list(value), sort_keys=True)


def compared_hparams(job: dict, sweep_keys: Iterable[str] = ()) -> dict:
    """The job keys an HParams entry shows: those the spec declares compared (`compare` in
    launcher/core/spec.py: what is trained and how, the device and the world size; the same
    set in every run, so that runs of different sweeps line up in one table), plus every key
    its sweep varies. `job` is the spec as a dict."""
    from launcher.core.spec import JobSpec
    fields = JobSpec.fields()
    keys = [k for k, f in fields.items() if f.metadata["compare"]]
    keys += [k for k in sweep_keys if k in fields and k not in keys]
    return {k: hparam_value(job[k]) for k in keys if k in job}


def sweep_keys_of(run_dir: Path) -> list[str]:
    """The keys the sweep that `run_dir` is a point of varies ([] outside a sweep)."""
    from launcher.core.rundir.sweepdir import sweep_doc
    doc = sweep_doc(run_dir.parent)
    if not doc or not any(p.get("dir") == run_dir.name for p in doc.get("points", [])):
        return []
    return [str(k) for k in doc.get("keys", [])]


class TensorBoardEvents:
    """The run's TensorBoard writer on rank 0. `first_step` is the global step this attempt
    trains first (1 on a fresh start; the resume point + 1): the purge marker's step, and the
    step of the job text and the HParams session start."""

    def __init__(self, run_dir: Path, *, attempt: int, first_step: int, log_every_steps: int,
                 clock: Callable[[], float] = time.time):
        self.run_dir, self.first_step, self.every = Path(run_dir), first_step, log_every_steps
        self.main = EventFile(self.run_dir / TB_DIR, attempt, first_step, clock=clock)
        self.hparams = EventFile(self.run_dir / TB_HPARAMS_DIR, attempt, first_step, clock=clock)
        self.last_step = first_step
        self._logged = first_step - 1  # the global step of the last per-step point

    # --- per step: the progress record --------------------------------------------------------
    def listen(self, record: Progress) -> None:
        """A Recorder listener: the training steps' values every `log_every_steps` steps (the
        first record past each multiple: in sink mode a record covers a chunk of steps)."""
        if record.event is not Event.STEP or \
                record.global_step // self.every <= self._logged // self.every:
            return
        self._logged = record.global_step
        values = {"train/loss": record.loss, "train/lr": record.lr,
                  "train/head_lr": record.head_lr, "train/images_per_s": record.images_per_s,
                  "train/step_time_s": record.step_time_s}
        self.last_step = record.global_step
        self.main.write(scalars({k: v for k, v in values.items() if v is not None}),
                        record.global_step)

    # --- per epoch: the metrics row -----------------------------------------------------------
    def epoch_row(self, row: dict) -> None:
        """A metrics.jsonl row (src/training/callbacks.Report), at the step ending its epoch."""
        step = int(row["epoch"]) * int(row["steps"])
        values = {"epoch/train_loss": row["train_loss"], "epoch/epoch_time_s": row["epoch_time_s"]}
        if row.get("val_acc") is not None:
            values |= {"epoch/val_acc": row["val_acc"], "epoch/best_acc": row["best_acc"],
                       "epoch/eval_time_s": row["eval_time_s"]}
            self.hparams.write(scalars({BEST_ACC: row["best_acc"], FINAL_ACC: row["val_acc"]}),
                               step)
        self.last_step = step
        self.main.write(scalars(values), step)
        self.main.sync()  # a restart resumes from an epoch end: what it keeps is on disk
        self.hparams.sync()

    # --- once ---------------------------------------------------------------------------------
    def job(self, job_json: str) -> None:
        """The resolved job, as a JSON block in the Text tab."""
        from tensorboardX.summary import text
        self.main.write(text("job", f"```json\n{job_json.strip()}\n```"), self.first_step)

    def session_start(self, hparams: dict) -> None:
        """The HParams session: the compared keys; its metrics are BEST_ACC and FINAL_ACC."""
        from tensorboardX.summary import hparams as hparams_summaries
        _, start, _ = hparams_summaries(hparams, {BEST_ACC: 0.0, FINAL_ACC: 0.0})
        self.hparams.write(start, self.first_step)

    def pictures(self, paths: Iterable[Path], step: int | None = None) -> list[str]:
        """Each PNG as the image `pictures/<stem>` at `step` (default: the last step written);
        a picture that cannot be read is a warning. Returns the tags written."""
        step = self.last_step if step is None else step
        written = []
        for path in paths:
            tag = f"pictures/{Path(path).stem}"
            try:
                self.main.write(png_summary(tag, Path(path).read_bytes()), step)
                written.append(tag)
            except (OSError, ValueError) as e:
                print(f"warning: TensorBoard: cannot add {path}: {e}", file=sys.stderr,
                      flush=True)
        return written

    def close(self, *, finished: bool) -> None:
        """Ends the HParams session (status success when the run finished, else none: a stopped
        run resumes) and closes the files."""
        if finished:
            from tensorboardX.summary import hparams as hparams_summaries
            _, _, end = hparams_summaries({}, {})
            self.hparams.write(end, self.last_step)
        self.main.close()
        self.hparams.close()


class PictureBudget:
    """Whether pictures made during training (curves at a new best) stay under `fraction` of
    the run's time so far: the time spent on them plus the next one's expected cost (the last
    one's, `first_estimate_s` before any) must fit in `fraction` x elapsed time."""

    def __init__(self, fraction: float = 0.01, first_estimate_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.fraction, self.estimate, self.clock = fraction, first_estimate_s, clock
        self.started, self.spent = clock(), 0.0

    def allows(self) -> bool:
        return self.spent + self.estimate <= self.fraction * (self.clock() - self.started)

    def charge(self, seconds: float) -> None:
        self.spent += seconds
        self.estimate = seconds
