"""README's first command: `packrun demo` (here --quick) runs the whole story end to end."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def packrun(*args, cwd, timeout):
    """The CLI of this checkout (cwd is elsewhere, so `-m launcher.cli` would otherwise find an
    installed packrun first)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-m", "launcher.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_demo_quick_runs_source_and_four_target_runs_then_exports_and_predicts(tmp_path):
    r = packrun("demo", "--quick", cwd=tmp_path, timeout=2400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "Delete parameter from checkpoint:  end_point.weight" in out  # head filtered
    for label in ("fine-tune", "freeze layer2", "fixed feature", "from scratch"):
        assert re.search(rf"^{label}\s+\d\.\d{{4}}\s+\d+\s+[\d.]+s\s+\S+", out, re.M), label
    assert "freeze = 'layer2': 32 of 62 parameters train" in out
    # the demo ends using its best model: exported, then predicting held-out images
    assert re.search(r"packrun: exported best.ckpt \(epoch \d+, val acc [\d.]+\) as MINDIR", out)
    assert re.search(r"packrun: exported best.ckpt .* as ONNX", out)
    assert re.search(r"^\S+/target/val/digit_8/\S+\.jpg  digit_[89]  [\d.]+$", out, re.M)
    assert re.search(r"packrun predict: 6 of 6 images predicted with \S+best\.onnx", out)
    assert (tmp_path / "demo_data" / "pretrained" / "resnet18_digits0-7.ckpt").is_file()
    assert list((tmp_path / "runs" / "demo").glob("*report.html"))
