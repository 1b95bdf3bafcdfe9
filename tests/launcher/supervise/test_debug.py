"""End to end: `packrun debug` on tiny real JPEGs (resnet18, 32 px) in a real worker process."""

import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from launcher.core.rundir.job_json import spec_from_json
from tests.helpers import packrun, params, run_dir_of, write_tiny_job

# (pytest-xdist builds a module fixture once per worker that runs a test using it. The tests
# that share `scratch_run` are one xdist group, so that README's `-n 3 --dist loadgroup` builds
# it once.)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("debug_scratch_run")]


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("debugjobs")
    write_tiny_job(d / "tiny.toml", digits_2class, epochs=3, lr=0.02)
    return d


@pytest.fixture(scope="module")
def scratch_run(job_dir):
    r = packrun("debug", job_dir / "tiny.toml", "--epochs=3")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r, run_dir_of(r)


def test_debug_run_writes_metrics_best_ckpt_and_log(scratch_run):
    result, run_dir = scratch_run
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"epoch", "train_loss", "val_acc", "epoch_time_s", "step_time_ms",
                "images_per_s"} <= set(r)
    assert (run_dir / "best.ckpt").is_file()
    log = (run_dir / "logs" / "worker_0.log").read_text()
    for line in ("Epoch 1/3", "----------", "train Loss: ", "val Acc: ", "per step time: ",
                 "End training, the best acc is: "):
        assert line in log and line in result.stdout
    assert spec_from_json(run_dir).epochs == 3  # the CLI override reached the worker


def test_the_worker_leaves_its_progress_record_at_the_last_step(scratch_run):
    from launcher.core.rundir.progress import Event, Stage, read_all_progress
    _, run_dir = scratch_run
    records = read_all_progress(run_dir)
    assert list(records) == [0]
    last = records[0]
    steps = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["steps"]
    assert (last.stage, last.event, last.epoch, last.step) == (Stage.DONE, Event.STAGE, 3, steps)
    assert last.global_step == 3 * steps and last.seq > 3 * steps  # one record per step at least
    assert last.loss is not None and last.lr == pytest.approx(0.02)
    assert last.pid == int((run_dir / "logs" / "worker_0.pid").read_text())


def test_best_ckpt_reproduces_the_recorded_best_accuracy(scratch_run):
    _, run_dir = scratch_run
    assert_best_ckpt_reproduces_recorded_accuracy(run_dir)
    best = max((json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()),
               key=lambda r: (r["val_acc"], r["epoch"]))
    assert f"the best acc is: {best['val_acc']}, the best acc epoch is {best['epoch']}" in \
        (run_dir / "logs" / "worker_0.log").read_text()


def assert_best_ckpt_reproduces_recorded_accuracy(run_dir: Path):
    from src.data import dataset
    from src.train import build_network, configure_context
    from src.training.evaluate import evaluate
    spec = spec_from_json(run_dir)
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: (r["val_acc"], r["epoch"]))
    configure_context(spec)
    net = build_network(spec)
    ckpt = ms.load_checkpoint(str(run_dir / "best.ckpt"))
    assert int(ckpt["epoch"]) == best["epoch"]
    ms.load_param_into_net(net, ckpt)
    val = dataset.create_dataset(spec.val_dir, dataset.class_names(spec.val_dir),
                                 spec.image_size, spec.batch_size, training=False)
    result = evaluate(net, val)
    assert result.total == 16  # every validation image, no dropped remainder
    assert result.accuracy == best["val_acc"]


@pytest.mark.parametrize("mode, cache", [("fixed_feature", "augmented"), ("fixed_feature", "off"),
                                         ("finetune", "off")])
def test_fixed_feature_trains_only_the_head(scratch_run, job_dir, mode, cache):
    _, scratch = scratch_run
    r = packrun("debug", job_dir / "tiny.toml", f"--mode={mode}", "--epochs=2",
                f"--feature_cache={cache}", f"--pretrained={scratch / 'best.ckpt'}",
                f"--name=tiny_{mode}_{cache}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Delete parameter from checkpoint:  end_point.weight" in r.stdout
    assert ("feature cache: 48 train images x 2 augmented view(s)" in r.stdout) == \
        (mode == "fixed_feature" and cache == "augmented")
    # the checkpoint is the full network and reproduces the accuracy the run recorded
    assert_best_ckpt_reproduces_recorded_accuracy(run_dir_of(r))
    before, after = params(scratch / "best.ckpt"), params(run_dir_of(r) / "best.ckpt")
    changed = sorted(k for k in after if not np.array_equal(before[k], after[k]))
    if mode == "fixed_feature":
        assert changed == ["end_point.bias", "end_point.weight"]
    else:
        assert "end_point.weight" in changed and "conv1.weight" in changed
        assert any(k.startswith("layer4.") for k in changed)
