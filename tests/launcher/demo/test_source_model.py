"""`packrun demo` reuses its source model while the settings and data are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.core.spec import load_job
from launcher.demo import source_model as demo_cache

pytestmark = pytest.mark.unit


@pytest.fixture
def job(make_job, tmp_path):
    """A source job whose class folders hold one (fake) image each."""
    path = make_job(name="src", epochs=3)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / "data" / split / cls / "a.jpg").write_bytes(f"{split}{cls}".encode())
    return path


class FakeTrainer:
    """Stands in for a debug run: writes a run directory with best.ckpt and counts calls."""

    def __init__(self, root: Path, fail: bool = False):
        self.root, self.fail, self.calls = root, fail, []

    def __call__(self, spec):
        self.calls.append(spec)
        if self.fail:
            return None
        run_dir = self.root / f"run{len(self.calls)}"
        run_dir.mkdir(parents=True)
        (run_dir / "best.ckpt").write_bytes(f"weights {len(self.calls)}".encode())
        return run_dir


def best_of(run_dir):
    return 0.5, 2


def ensure(spec, pretrained, trainer, fresh=False):
    return demo_cache.source_model(spec, pretrained, fresh, trainer, best_of)


def test_digest_follows_settings_data_and_not_where_runs_go(job, tmp_path):
    digest = demo_cache.source_digest(load_job(job))
    assert demo_cache.source_digest(load_job(job)) == digest
    assert demo_cache.source_digest(load_job(job, {"output_dir": str(tmp_path / "o"),
                                                   "name": "other"})) == digest
    assert demo_cache.source_digest(load_job(job, {"epochs": 4})) != digest
    image = tmp_path / "data" / "val" / "dog" / "a.jpg"
    image.write_bytes(b"changed")
    assert demo_cache.source_digest(load_job(job)) != digest
    image.rename(image.with_name("b.jpg"))  # same bytes, another name
    changed = demo_cache.source_digest(load_job(job))
    image.with_name("b.jpg").rename(image)
    assert changed != demo_cache.source_digest(load_job(job))


def test_second_demo_reuses_the_source_model_and_fresh_retrains(job, tmp_path, capsys):
    pretrained = tmp_path / "work" / "pretrained" / "model.ckpt"
    trainer = FakeTrainer(tmp_path / "runs")
    assert ensure(load_job(job), pretrained, trainer)
    assert len(trainer.calls) == 1 and pretrained.read_bytes() == b"weights 1"
    assert "trained" in capsys.readouterr().out

    pretrained.write_bytes(b"clobbered")  # the copy the target jobs read is restored
    assert ensure(load_job(job, {"output_dir": str(tmp_path / "elsewhere")}), pretrained, trainer)
    assert len(trainer.calls) == 1 and pretrained.read_bytes() == b"weights 1"
    out = capsys.readouterr().out
    assert "reused" in out and "--fresh retrains" in out and "0.5000" in out

    assert ensure(load_job(job), pretrained, trainer, fresh=True)
    assert len(trainer.calls) == 2 and pretrained.read_bytes() == b"weights 2"
    assert ensure(load_job(job), pretrained, trainer)  # the fresh one is now the cached one
    assert len(trainer.calls) == 2 and pretrained.read_bytes() == b"weights 2"


def test_changed_settings_retrain_and_each_keeps_its_own_slot(job, tmp_path):
    pretrained = tmp_path / "pretrained" / "model.ckpt"
    trainer = FakeTrainer(tmp_path / "runs")
    ensure(load_job(job), pretrained, trainer)
    ensure(load_job(job, {"epochs": 1}), pretrained, trainer)  # like --quick
    assert len(trainer.calls) == 2 and pretrained.read_bytes() == b"weights 2"
    ensure(load_job(job), pretrained, trainer)  # back to the full settings: still cached
    assert len(trainer.calls) == 2 and pretrained.read_bytes() == b"weights 1"


def test_failed_training_caches_nothing(job, tmp_path):
    pretrained = tmp_path / "pretrained" / "model.ckpt"
    assert not ensure(load_job(job), pretrained, FakeTrainer(tmp_path / "runs", fail=True))
    assert not pretrained.exists()
    trainer = FakeTrainer(tmp_path / "runs")
    assert ensure(load_job(job), pretrained, trainer) and len(trainer.calls) == 1


def test_slot_without_its_record_or_with_another_digest_is_retrained(job, tmp_path):
    pretrained = tmp_path / "pretrained" / "model.ckpt"
    trainer = FakeTrainer(tmp_path / "runs")
    spec = load_job(job)
    ensure(spec, pretrained, trainer)
    ckpt, record = demo_cache.slot(pretrained, demo_cache.source_digest(spec))
    assert ckpt.is_file() and json.loads(record.read_text())["val_acc"] == 0.5
    record.unlink()  # as after a crash between the copy and the record
    ensure(spec, pretrained, trainer)
    assert len(trainer.calls) == 2
    record.write_text(json.dumps({"digest": "0" * 64, "val_acc": 1, "epoch": 1, "run_dir": "x"}))
    ensure(spec, pretrained, trainer)
    assert len(trainer.calls) == 3
