"""Each rank's progress record: where it is (phase, epoch, step, evaluation batch) and how it
goes (loss, learning rates, step time, images/s), with the wall-clock time it was made.

ONE record, several readers: the worker (src/training/progress.py) makes a `Progress` after
every training step, evaluation batch, save and phase change, hands it to its in-process
listeners (the console line, the TensorBoard writer) and writes it to
`logs/worker_<rank>.progress` (names.worker_progress), where the supervisors' stall watchdog and
`packrun status` read it. The file is replaced whole (a reader sees the old record or the new
one) without fsync: it is a heartbeat, not data (benchmarks/bench_progress.py: a record costs
well under 1% of a CPU step).

Progress, for a watchdog, is a change of `seq` (it grows with every record a process makes) or of
`pid` (a restarted worker). A record's `time` is only informative: clocks of different hosts need
not agree, so a watcher measures silence by its own clock since it last saw `seq` change.

No MindSpore import.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path

from launcher.core.rundir.names import WORKER_PROGRESS_GLOB, worker_progress


class Event(StrEnum):
    """What made a record: a training step ended, an evaluation (or caching) batch ended, or the
    stage changed (a save, an evaluation's start, the end)."""
    STEP = "step"
    BATCH = "batch"
    STAGE = "stage"


class Stage(StrEnum):
    """What a rank is doing. COMPILING: before its first step of a Model.train call ends (graph
    compilation, the input pipeline starting). WAITING: in a collective for another rank (the
    ranks that wait while rank 0 evaluates, with eval_mode "rank0")."""
    STARTING = "starting"
    COMPILING = "compiling"
    TRAINING = "training"
    EVALUATING = "evaluating"
    WAITING = "waiting"
    CACHING = "caching"  # computing the frozen prefix's feature cache (eval_batch counts batches)
    SAVING = "saving"
    FINISHING = "finishing"  # after the last epoch: the final digest and the run's pictures
    DONE = "done"


@dataclass(frozen=True)
class Progress:
    """One rank's progress. `epoch` is 1-based (0 before the first), `step` the steps of it
    done, `global_step` the steps done since the run began ((epoch - 1) * steps_per_epoch +
    step: the x axis of every per-step curve, continuous across resumes). `eval_batch` counts
    the batches of the evaluation running (0 outside one). `loss`, `lr`, `head_lr`, `step_time_s`
    and `images_per_s` describe the last step (None before one; `head_lr` only when the head's
    learning rate differs); `images_per_s` counts every rank's images."""
    rank: int
    pid: int
    attempt: int
    seq: int
    time: float
    stage: Stage
    event: Event = Event.STAGE
    epoch: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    global_step: int = 0
    eval_batch: int = 0
    loss: float | None = None
    lr: float | None = None
    head_lr: float | None = None
    step_time_s: float | None = None
    images_per_s: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "Progress":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["stage"] = Stage(values["stage"])
        values["event"] = Event(values.get("event", Event.STAGE))
        return cls(**values)

    def where(self) -> str:
        """`training epoch 2 step 7/20`, `evaluating epoch 2 (batch 3)`, `compiling`."""
        if self.stage is Stage.EVALUATING:
            return f"evaluating epoch {self.epoch} (batch {self.eval_batch})"
        if self.epoch == 0:
            return self.stage.value
        return f"{self.stage.value} epoch {self.epoch} step {self.step}/{self.steps_per_epoch}"

    def advanced(self, **changes) -> "Progress":
        """This record with `changes`, the next `seq` and `time` (caller passes `time`)."""
        return replace(self, seq=self.seq + 1, **changes)


def write_progress(run_dir: str | Path, progress: Progress) -> None:
    """Replace the rank's record whole (a temporary file and os.replace, no fsync)."""
    path = Path(run_dir) / worker_progress(progress.rank)
    tmp = path.with_name(f".{path.name}.{progress.pid}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(progress.to_json())
    os.replace(tmp, path)


def read_progress(run_dir: str | Path, rank: int) -> Progress | None:
    """Rank `rank`'s last record, or None (none yet, or not a record)."""
    try:
        text = (Path(run_dir) / worker_progress(rank)).read_text(encoding="utf-8")
        return Progress.from_dict(json.loads(text))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_all_progress(run_dir: str | Path) -> dict[int, Progress]:
    """Every rank's last record in this run directory, by rank."""
    out = {}
    for path in sorted(Path(run_dir).glob(WORKER_PROGRESS_GLOB)):
        rank_text = path.name.split("_", 1)[1].split(".", 1)[0]
        if rank_text.isdigit():
            record = read_progress(run_dir, int(rank_text))
            if record is not None:
                out[record.rank] = record
    return out


def clear_progress(run_dir: str | Path) -> None:
    """Remove every rank's record: a new attempt starts from none (a watcher then sees each
    rank's first record of this attempt as progress)."""
    for path in Path(run_dir).glob(WORKER_PROGRESS_GLOB):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
