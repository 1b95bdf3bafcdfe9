"""Rank 0's TensorBoard event files (src/training/tensorboard_events.py), read back with
TensorBoard's own reader: the writer's parts without training (unit), and one real debug run
whose tags must equal what the worker computed and wrote to metrics.jsonl (e2e).

(The kill -9 restart's purge is tested in tests/launcher/supervise/test_restarts.py, a 2 x 2
sweep's HParams, images and `packrun board` over HTTP in tests/launcher/sweep/test_sweep.py:
both on runs those tests make anyway.)"""

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher.core.rundir.names import ATTEMPT_ENV, TB_DIR, TB_HPARAMS_DIR, TRACE_ENV
from launcher.core.rundir.progress import Event, Progress, Stage
from launcher.core.spec import JobSpec, build_spec
from src.training.tensorboard_events import (
    BEST_ACC,
    FINAL_ACC,
    EventFile,
    PictureBudget,
    TensorBoardEvents,
    compared_hparams,
    png_summary,
    scalars,
    sweep_keys_of,
)
from tests.helpers import (
    float32,
    scalar_points,
    tensorboard_events,
    traced_losses,
)


def step_record(global_step: int, loss: float, head_lr: float | None = None,
                event: Event = Event.STEP) -> Progress:
    return Progress(rank=0, pid=1, attempt=1, seq=global_step, time=0.0, stage=Stage.TRAINING,
                    event=event, epoch=1, step=global_step, steps_per_epoch=100,
                    global_step=global_step, loss=loss, lr=0.1, head_lr=head_lr,
                    step_time_s=0.5, images_per_s=16.0)


def hparams_of(run: Path) -> dict:
    """The HParams session start a run's tb/hparams holds: {key: value}."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    contents = tensorboard_events(run / TB_HPARAMS_DIR).PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(
        contents["_hparams_/session_start_info"])
    out = {}
    for k, v in data.session_start_info.hparams.items():
        kind = v.WhichOneof("kind")
        out[k] = getattr(v, kind)
    return out


# =============================================================================================
# The writer, without training
# =============================================================================================

@pytest.mark.unit
def test_per_step_values_every_log_every_steps_global_steps(tmp_path):
    board = TensorBoardEvents(tmp_path, attempt=1, first_step=1, log_every_steps=3)
    for g in range(1, 11):
        board.listen(step_record(g, loss=g / 10, head_lr=1.0 if g > 5 else None))
    board.listen(step_record(12, loss=9.0, event=Event.BATCH))  # not a training step
    board.close(finished=True)
    acc = tensorboard_events(tmp_path / TB_DIR)
    assert scalar_points(acc, "train/loss") == [(3, float32(0.3)), (6, float32(0.6)),
                                                (9, float32(0.9))]
    assert [s for s, _ in scalar_points(acc, "train/head_lr")] == [6, 9]
    assert scalar_points(acc, "train/images_per_s") == [(3, 16.0), (6, 16.0), (9, 16.0)]
    assert scalar_points(acc, "train/step_time_s")[0] == (3, 0.5)
    assert scalar_points(acc, "train/lr")[0] == (3, float32(0.1))


@pytest.mark.unit
def test_in_sink_mode_a_record_covering_several_steps_still_gives_a_point(tmp_path):
    """Sink mode reports every sink_size steps (here 7): the first record past each multiple of
    log_every_steps (10) is written, none is lost to the modulo."""
    board = TensorBoardEvents(tmp_path, attempt=1, first_step=1, log_every_steps=10)
    for g in range(7, 50, 7):
        board.listen(step_record(g, loss=1.0))
    board.close(finished=False)
    assert [s for s, _ in scalar_points(tensorboard_events(tmp_path / TB_DIR), "train/loss")] \
        == [14, 21, 35, 42]


@pytest.mark.unit
def test_epoch_rows_at_the_step_that_ends_the_epoch_accuracy_only_when_evaluated(tmp_path):
    board = TensorBoardEvents(tmp_path, attempt=1, first_step=1, log_every_steps=5)
    row = dict(epoch=1, steps=4, train_loss=0.7, epoch_time_s=2.0, val_acc=None, best_acc=0.0,
               eval_time_s=0.0)
    board.epoch_row(row)
    board.epoch_row(row | dict(epoch=2, val_acc=0.75, best_acc=0.75, eval_time_s=0.25))
    board.close(finished=True)
    acc = tensorboard_events(tmp_path / TB_DIR)
    assert scalar_points(acc, "epoch/train_loss") == [(4, float32(0.7)), (8, float32(0.7))]
    assert scalar_points(acc, "epoch/val_acc") == [(8, 0.75)]
    assert scalar_points(acc, "epoch/best_acc") == [(8, 0.75)]
    assert scalar_points(acc, "epoch/eval_time_s") == [(8, 0.25)]
    hp = tensorboard_events(tmp_path / TB_HPARAMS_DIR)
    assert scalar_points(hp, BEST_ACC) == [(8, 0.75)] and scalar_points(hp, FINAL_ACC) == \
        [(8, 0.75)]
    assert "_hparams_/session_end_info" in hp.PluginTagToContent("hparams")


@pytest.mark.unit
def test_a_restart_purges_what_the_attempt_before_wrote_from_its_first_step(tmp_path):
    """Attempt 2 resumes after step 5 within the same second as attempt 1 (same host, same pid
    here): both files stay, and TensorBoard shows steps 1..5 of attempt 1, then attempt 2's."""
    now = time.time()
    first = EventFile(tmp_path, 1, 1, clock=lambda: now)
    for s in range(1, 9):
        first.write(scalars({"x": s}), s)
    first.close()
    second = EventFile(tmp_path, 2, 6, clock=lambda: now)
    for s in range(6, 11):
        second.write(scalars({"x": 100 + s}), s)
    second.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert first.path.name < second.path.name  # read in this order
    assert scalar_points(tensorboard_events(tmp_path), "x") == \
        [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 106.0), (7, 107.0),
         (8, 108.0), (9, 109.0), (10, 110.0)]


@pytest.mark.unit
def test_without_the_purge_marker_the_restarted_steps_would_repeat(tmp_path):
    """What the marker prevents (so the test above cannot pass by accident)."""
    first = EventFile(tmp_path, 1, None)
    for s in range(1, 4):
        first.write(scalars({"x": s}), s)
    first.close()
    second = EventFile(tmp_path, 2, None)
    second.write(scalars({"x": 2}), 2)
    second.close()
    assert [s for s, _ in scalar_points(tensorboard_events(tmp_path), "x")] == [1, 2, 3, 2]


@pytest.mark.unit
def test_a_picture_goes_in_as_the_png_it_is(tmp_path):
    from PIL import Image
    Image.new("RGB", (30, 20), (255, 0, 0)).save(tmp_path / "curves.png")
    board = TensorBoardEvents(tmp_path, attempt=1, first_step=1, log_every_steps=1)
    assert board.pictures([tmp_path / "curves.png", tmp_path / "missing.png"], 7) == \
        ["pictures/curves"]
    board.close(finished=False)
    image = tensorboard_events(tmp_path / TB_DIR).Images("pictures/curves")[0]
    assert (image.step, image.width, image.height) == (7, 30, 20)
    assert image.encoded_image_string == (tmp_path / "curves.png").read_bytes()
    with pytest.raises(ValueError):
        png_summary("x", b"GIF89a")


@pytest.mark.unit
def test_hparams_hold_the_training_keys_and_every_key_a_sweep_varies(tmp_path):
    spec = build_spec({"train_dir": "/d", "val_dir": "/d", "lr": 0.05, "sink_size": 7,
                       "env": {"A": "1"}}, check_paths=False).to_dict()
    hp = compared_hparams(spec, ["sink_size", "env"])
    training = {k for k, f in JobSpec.fields().items() if f.metadata["group"] == "training"}
    assert training <= set(hp)
    assert {"device", "amp_level", "graph_mode", "cards_per_node", "scale_lr",
            "eval_interval"} <= set(hp)
    assert (hp["lr"], hp["sink_size"], hp["env"]) == (0.05, 7, '{"A": "1"}')
    assert "partition" not in hp and "output_dir" not in hp
    # a sweep's point knows its sweep's keys from sweep.json beside it
    sweep = tmp_path / "s"
    (sweep / "lr=0.1").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps(
        {"format": 1, "keys": ["lr", "sink_size"], "points": [{"dir": "lr=0.1"}]}))
    assert sweep_keys_of(sweep / "lr=0.1") == ["lr", "sink_size"]
    assert sweep_keys_of(tmp_path / "alone") == []


@pytest.mark.unit
def test_pictures_during_training_stay_under_one_percent_of_the_run():
    now = [0.0]
    budget = PictureBudget(fraction=0.01, first_estimate_s=2.0, clock=lambda: now[0])
    now[0] = 100.0
    assert not budget.allows()          # 2 s expected > 1 s allowed
    now[0] = 200.0
    assert budget.allows()
    budget.charge(1.5)
    now[0] = 250.0
    assert not budget.allows()          # 1.5 + 1.5 > 2.5
    now[0] = 300.0
    assert budget.allows()


@pytest.mark.unit
def test_the_worker_wires_the_writer_to_the_record_and_the_rows_and_adds_curves_at_a_new_best(
        tmp_path, monkeypatch):
    """src/train.start_tensorboard on a resumed run: the purge marker and the job text at the
    first step after the resume point, per-step values from the Recorder, epoch values from
    the rows, curves.png at a new best when the budget allows it (and not when it does not)."""
    from launcher.core.rundir.job_json import spec_to_json
    from src.train import ResumePoint, start_tensorboard
    from src.training.progress import Recorder
    spec = build_spec({"train_dir": "/d", "val_dir": "/d", "name": "w", "epochs": 3,
                       "log_every_steps": 2}, check_paths=False)
    (tmp_path / "job.json").write_text(spec_to_json(spec))
    rows = [dict(epoch=e, steps=4, train_loss=1.0 / e, val_acc=a, best_acc=b, best_epoch=be,
                 epoch_time_s=1.0, eval_time_s=0.1, lr=0.1, step_time_ms=250.0,
                 images_per_s=32.0) for e, a, b, be in [(2, 0.5, 0.5, 2), (3, 0.4, 0.5, 2)]]

    class Always(PictureBudget):
        def allows(self):
            return True

    monkeypatch.setenv(ATTEMPT_ENV, "2")
    recorder, report = Recorder(None, 0, 2, lr_at=lambda g: 0.1), \
        SimpleNamespace(row_listeners=[])
    board = start_tensorboard(spec, tmp_path, ResumePoint(epoch=1), 4, recorder, report,
                              budget=Always())
    for step in (1, 2, 3, 4):
        recorder.step(2, step, 4, loss=float(step))
    for i, row in enumerate(rows):
        (tmp_path / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows[:i + 1]))
        for listener in report.row_listeners:
            listener(row)
    board.close(finished=True)
    acc = tensorboard_events(tmp_path / TB_DIR)
    assert scalar_points(acc, "train/loss") == [(6, 2.0), (8, 4.0)]
    assert scalar_points(acc, "epoch/val_acc") == [(8, 0.5), (12, float32(0.4))]
    assert acc.Tensors("job/text_summary")[0].step == 5
    assert [i.step for i in acc.Images("pictures/curves")] == [8]   # epoch 2: the new best
    assert (tmp_path / "curves.png").is_file()
    assert [f.name.split(".")[-2] for f in (tmp_path / TB_DIR).glob("events.*")] == \
        ["attempt002"]
    # the default budget: a picture's expected 2 s is not under 1% of a run just begun
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("job.json", "metrics.jsonl"):
        (fresh / name).write_text((tmp_path / name).read_text())
    report.row_listeners = []
    start_tensorboard(spec, fresh, ResumePoint(), 4, recorder, report).close(finished=False)
    report.row_listeners[-1](rows[0])
    assert not (fresh / "curves.png").exists()


# =============================================================================================
# A real run
# =============================================================================================

EPOCHS, STEPS = 2, 6   # tiny job: 48 training images, batch 8, one worker


@pytest.fixture(scope="module")
def run(reference_run):
    """A debug run: 2 epochs of 6 steps, every step written, epoch 1 not evaluated, a head
    learning rate of its own; the worker traces each step's loss. Trained once per session
    (conftest's reference_run): the tests only read it, and pytest-xdist gives this module's
    tests to several workers, which each trained their own copy (and compiled it at once)."""
    return reference_run("debug", env_extra={TRACE_ENV: "1"}, epochs=EPOCHS, log_every_steps=1,
                         eval_start_epoch=2, head_lr_mult=2.0)


@pytest.mark.e2e
def test_epoch_scalars_equal_metrics_jsonl_values_and_steps(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = tensorboard_events(run / TB_DIR)
    for tag, key in [("epoch/train_loss", "train_loss"), ("epoch/epoch_time_s", "epoch_time_s")]:
        assert scalar_points(acc, tag) == [(r["epoch"] * r["steps"], float32(r[key]))
                                           for r in rows]
    evaluated = [r for r in rows if r["val_acc"] is not None]
    assert [r["epoch"] for r in evaluated] == [2]
    for tag, key in [("epoch/val_acc", "val_acc"), ("epoch/best_acc", "best_acc"),
                     ("epoch/eval_time_s", "eval_time_s")]:
        assert scalar_points(acc, tag) == [(r["epoch"] * r["steps"], float32(r[key]))
                                           for r in evaluated]
    hp = tensorboard_events(run / TB_HPARAMS_DIR)
    assert scalar_points(hp, BEST_ACC) == [(12, float32(rows[-1]["best_acc"]))]
    assert scalar_points(hp, FINAL_ACC) == [(12, float32(rows[-1]["val_acc"]))]


@pytest.mark.e2e
def test_per_step_loss_is_what_each_step_computed(run):
    log = (run / "logs" / "worker_0.log").read_text()
    traced = traced_losses(log)
    assert len(traced) == EPOCHS * STEPS
    acc = tensorboard_events(run / TB_DIR)
    expected = [((int(e) - 1) * STEPS + int(s), float32(v))
                for e, s in (k.split(".") for k in traced) for v in [traced[f"{e}.{s}"]]]
    assert scalar_points(acc, "train/loss") == expected
    lr = scalar_points(acc, "train/lr")
    assert [s for s, _ in lr] == list(range(1, EPOCHS * STEPS + 1))
    assert scalar_points(acc, "train/head_lr") == [(s, float32(2 * v)) for s, v in lr]
    assert all(v > 0 for _, v in scalar_points(acc, "train/images_per_s"))
    # the record the console and the watchdog read ends with the last step's loss
    progress = json.loads((run / "logs" / "worker_0.progress").read_text())
    assert float32(progress["loss"]) == expected[-1][1]


@pytest.mark.e2e
def test_pictures_job_text_and_hparams_of_a_finished_run(run):
    acc = tensorboard_events(run / TB_DIR)
    for name in ("curves", "predictions", "confusion"):
        image = acc.Images(f"pictures/{name}")[-1]
        assert image.step == EPOCHS * STEPS
        assert image.encoded_image_string == (run / f"{name}.png").read_bytes()
    text = acc.Tensors("job/text_summary")[0]
    assert text.step == 1
    shown_job = text.tensor_proto.string_val[0].decode()
    assert json.loads(re.sub(r"^```json\n|\n```$", "", shown_job)) == \
        json.loads((run / "job.json").read_text())
    hp = hparams_of(run)
    assert (hp["lr"], hp["epochs"], hp["head_lr_mult"], hp["arch"]) == (0.01, 2, 2.0, "resnet18")
    assert "_hparams_/session_end_info" in \
        tensorboard_events(run / TB_HPARAMS_DIR).PluginTagToContent("hparams")
    # one file per directory: rank 0's, of the one attempt
    assert [p.name.split(".")[-2] for p in (run / TB_DIR).glob("events.*")] == ["attempt001"]
