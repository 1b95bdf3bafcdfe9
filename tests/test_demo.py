"""README's first command: `packrun demo` (here --quick) runs the whole story end to end."""

import re

from tests.test_debug_run import packrun


def test_demo_quick_runs_source_and_three_target_runs(tmp_path):
    r = packrun("demo", "--quick", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "Delete parameter from checkpoint:  end_point.weight" in out  # head filtered
    for label in ("fine-tune", "fixed feature", "from scratch"):
        # run, state, best val acc (* on the best run), best epoch, last val acc, time, dir
        assert re.search(rf"^{label}\s+completed\s+\d\.\d{{4}}( \*)?\s+\d+\s+\d\.\d{{4}}\s+"
                         rf"\d+(m\d\d)?s\s+\S+", out, re.M), label
    assert (tmp_path / "demo_data" / "pretrained" / "resnet18_digits0-7.ckpt").is_file()
    assert list((tmp_path / "runs" / "demo").glob("*report.html"))
