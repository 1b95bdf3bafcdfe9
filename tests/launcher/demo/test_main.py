"""README's first command: `packrun demo` (here --quick) runs the whole story end to end."""

import math
import re
from itertools import pairwise

import pytest

from tests.helpers import packrun

pytestmark = pytest.mark.e2e

# The tests that read the first quick demo share one (a demo is minutes of CPU): the same xdist
# group, so that under `pytest -n 3 --dist loadgroup` the module fixture runs on one worker once.
SHARES_QUICK_DEMO = pytest.mark.xdist_group("quick_demo")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """(the directory, the result) of one `packrun demo --quick` in a fresh directory."""
    workdir = tmp_path_factory.mktemp("demo")
    r = packrun("demo", "--quick", cwd=workdir, timeout=2400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return workdir, r


@SHARES_QUICK_DEMO
def test_demo_quick_runs_source_and_four_target_runs_then_exports_and_predicts(quick_demo):
    tmp_path, r = quick_demo
    out = r.stdout
    assert "Delete parameter from checkpoint:  end_point.weight" in out  # head filtered
    assert "warning: train loss" not in out
    assert "[INFO]" not in out and "Event base dispatch" not in out  # MindSpore's chatter: logs
    assert " 1 steps/epoch" not in out and " 1 epochs" not in out
    assert "time: wall clock of each run" in out  # vs the report's train/eval times
    # the target runs side by side (from scratch beside the source run), each run's console
    # kept in its logs/console.out and shown whole, in the demo's order
    assert "from scratch starts now (it needs no source model)" in out
    assert re.search(r"pictures; \d runs at a time\)", out)
    sections = [out.index(f"target task 8 vs 9: {label} ===") for label in
                ("fine-tune", "freeze layer2", "fixed feature", "from scratch")]
    assert sections == sorted(sections)
    for section, end in zip(sections, sections[1:] + [len(out)]):
        assert out[section:end].count("packrun: run finished") == 1
    consoles = list((tmp_path / "runs" / "demo").glob("demo_*/logs/console.out"))
    assert len(consoles) == 4 and all("End training" in c.read_text() for c in consoles)
    # each target run is rendered, then started: it says so, it resumes nothing
    assert all("packrun: starting demo_" in c.read_text() and "resuming" not in c.read_text()
               for c in consoles)
    for label in ("fine-tune", "freeze layer2", "fixed feature", "from scratch"):
        # run, state, best val acc (* on the best run), best epoch, last val acc, time, dir
        assert re.search(rf"^{label}\s+completed\s+\d\.\d{{4}}( \*)?\s+\d+\s+\d\.\d{{4}}\s+"
                         rf"\d+(m\d\d)?s\s+\S+", out, re.M), label
    assert "freeze = 'layer2': 32 of 62 parameters train" in out
    # the demo ends using its best model: exported, then predicting held-out images (started
    # in the background once every target run's results were final, shown after the table)
    assert (out.index("* best: ") < out.index("using the best model: export and predict ===")
            < out.index("$ packrun export") < out.index("packrun: exported best.ckpt")
            < out.index("$ packrun predict") < out.index("packrun predict: 6 of 6"))
    assert re.search(r"packrun: exported best.ckpt \(epoch \d+, val acc [\d.]+\) as MINDIR", out)
    assert re.search(r"packrun: exported best.ckpt .* as ONNX", out)
    assert re.search(r"^\S+/target/val/digit_8/\S+\.jpg  digit_[89]  [\d.]+$", out, re.M)
    assert re.search(r"packrun predict: 6 of 6 images predicted with \S+best\.onnx", out)
    assert (tmp_path / "demo_data" / "pretrained" / "resnet18_digits0-7.ckpt").is_file()
    assert list((tmp_path / "runs" / "demo").glob("*report.html"))


@pytest.mark.e2e
def test_demo_source_recipe_trains_with_finite_falling_loss(tmp_path):
    """The embedded default's pretraining (jobs/demo_source.toml as `packrun demo` runs it, all
    1155 images, every epoch, evaluated after the last) trains cleanly: lr 0.05 without warm-up
    overflowed to inf in epoch 2, and the demo printed `warning: train loss is inf`."""
    from launcher.core.rundir.metrics import read_metrics
    from launcher.core.spec import load_job
    from launcher.demo.digits_data import export_digits
    from launcher.demo.main import SOURCE_CLASSES, SOURCE_JOB
    export_digits(tmp_path / "source", SOURCE_CLASSES)
    r = packrun("debug", SOURCE_JOB, f"--train_dir={tmp_path / 'source' / 'train'}",
                f"--val_dir={tmp_path / 'source' / 'val'}", f"--output_dir={tmp_path / 'runs'}",
                cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "warning: train loss" not in r.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    losses = [row["train_loss"] for row in read_metrics(run_dir)]
    epochs = load_job(SOURCE_JOB, {"train_dir": str(tmp_path / "source" / "train"),
                                   "val_dir": str(tmp_path / "source" / "val")}).epochs
    assert len(losses) == epochs and all(math.isfinite(x) for x in losses), losses
    assert all(b < a for a, b in pairwise(losses[:-1])), losses  # falls (the last may tie)
    # only the last epoch is evaluated (eval_start_epoch): it is the best, and it is good
    evaluated = [(row["epoch"], row["val_acc"]) for row in read_metrics(run_dir)
                 if row["val_acc"] is not None]
    assert len(evaluated) == 1 and evaluated[0][0] == epochs and evaluated[0][1] > 0.95, evaluated


@pytest.mark.e2e
@SHARES_QUICK_DEMO
def test_second_quick_demo_reuses_the_source_model(quick_demo):
    tmp_path, first = quick_demo  # the first demo in this directory
    assert "source model:" in first.stdout and "trained" in first.stdout
    again = packrun("demo", "--quick", cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "reused (same settings and data; --fresh retrains)" in again.stdout
    assert len(list((tmp_path / "runs" / "demo").glob("demo_source-*"))) == 1
    assert "Delete parameter from checkpoint:  end_point.weight" in again.stdout  # it loaded
