"""README's first command: `packrun demo` (here --quick) runs the whole story end to end."""

import re

from tests.test_debug_run import packrun


def test_demo_quick_runs_source_and_three_target_runs(tmp_path):
    r = packrun("demo", "--quick", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "Delete parameter from checkpoint:  end_point.weight" in out  # head filtered
    for label in ("fine-tune", "fixed feature", "from scratch"):
        assert re.search(rf"^{label}\s+\d\.\d{{4}}\s+\d+\s+[\d.]+s\s+\S+", out, re.M), label
    assert (tmp_path / "demo_data" / "pretrained" / "resnet18_digits0-7.ckpt").is_file()
    assert list((tmp_path / "runs" / "demo").glob("*report.html"))


def test_second_quick_demo_reuses_the_source_model(tmp_path):
    first = packrun("demo", "--quick", cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "source model:" in first.stdout and "trained" in first.stdout
    again = packrun("demo", "--quick", cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "reused (same settings and data; --fresh retrains)" in again.stdout
    assert len(list((tmp_path / "runs" / "demo").glob("demo_source-*"))) == 1
    assert "Delete parameter from checkpoint:  end_point.weight" in again.stdout  # it loaded
