"""The worker's progress recorder: each training step, evaluation batch and stage change makes
one record, written to the run directory and handed to the listeners (the console line, the
TensorBoard writer); step time, images/s and learning rates are those of the step."""

import pytest

from launcher.core.rundir.progress import Event, Stage, read_progress
from src.training.progress import Recorder

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_steps_batches_and_stages_are_records_on_disk_and_for_listeners(tmp_path):
    (tmp_path / "logs").mkdir()
    clock = Clock()
    rec = Recorder(tmp_path, 1, 2, images_per_step=16, lr_at=lambda s: 0.1 * (s + 1),
                   head_lr_mult=10.0, clock=clock, monotonic=clock)
    heard = []
    rec.subscribe(heard.append)
    assert read_progress(tmp_path, 1).stage is Stage.STARTING
    rec.stage(Stage.COMPILING, epoch=2, step=0, steps_per_epoch=5)
    clock.t += 0.5
    rec.step(2, 1, 5, 0.75)
    step = read_progress(tmp_path, 1)
    assert (step.event, step.stage, step.epoch, step.step, step.global_step) == \
        (Event.STEP, Stage.TRAINING, 2, 1, 6)
    assert step.step_time_s == pytest.approx(0.5) and step.images_per_s == pytest.approx(32)
    assert step.lr == pytest.approx(0.6) and step.head_lr == pytest.approx(6.0)
    assert (step.attempt, step.rank, step.loss) == (2, 1, 0.75)
    rec.stage(Stage.EVALUATING)
    rec.batch(1)
    rec.batch(2)
    last = read_progress(tmp_path, 1)
    assert last.where() == "evaluating epoch 2 (batch 2)" and last.event is Event.BATCH
    assert [r.seq for r in heard] == [1, 2, 3, 4, 5] and heard[-1] == last


def test_a_failing_listener_is_dropped_and_training_goes_on(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    rec = Recorder(tmp_path, 0, 1)

    def broken(record):
        raise ValueError("viewer down")

    rec.subscribe(broken)
    rec.stage(Stage.TRAINING)
    rec.stage(Stage.SAVING)
    assert rec.listeners == [] and read_progress(tmp_path, 0).stage is Stage.SAVING
    assert capsys.readouterr().err.count("viewer down") == 1


def test_without_a_run_directory_nothing_is_written(tmp_path):
    rec = Recorder(None, 0, 1, lr_at=lambda s: 0.5)
    rec.step(1, 1, 3, 1.0)
    assert rec.current.lr == 0.5 and rec.current.head_lr is None
    assert not any(tmp_path.iterdir())
