"""The demo's last step, export and predict with the best run's model, runs in the background
from the moment every target run's results are final: its output is kept and shown after the
comparison table, stdout on stdout and stderr on stderr, in order; a failed export predicts
nothing; stop() ends it."""

from __future__ import annotations

import sys
import time

import pytest

from launcher.demo.main import LONGEST, BestModel, variants
from tests.helpers import wait_for

pytestmark = pytest.mark.unit

# a stand-in `packrun`: says which command it ran on stdout and stderr, writes it down, sleeps
# (env FAKE_SLEEP_<command>, else FAKE_SLEEP), and fails when it is the command in env FAKE_FAIL
FAKE = """
import os, sys, time
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(sys.argv[1] + "\\n")
print(f"{sys.argv[1]} out {' '.join(sys.argv[2:])}", flush=True)
print(f"{sys.argv[1]} err", file=sys.stderr, flush=True)
time.sleep(float(os.environ.get(f"FAKE_SLEEP_{sys.argv[1]}", os.environ.get("FAKE_SLEEP", "0"))))
sys.exit(3 if os.environ.get("FAKE_FAIL") == sys.argv[1] else 0)
"""
# its warm start (main.WARM_CLI): says it waits, then runs as FAKE once told "go"
WARM = """
import os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write("waiting\\n")
if sys.stdin.readline().strip() != "go":
    sys.exit(1)
""" + FAKE


@pytest.fixture
def fake(tmp_path, monkeypatch):
    for digit in (8, 9):
        (tmp_path / "val" / f"digit_{digit}").mkdir(parents=True)
        for i in range(4):
            (tmp_path / "val" / f"digit_{digit}" / f"{i:04d}.jpg").write_bytes(b"")
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "ran.txt"))
    model = BestModel(tmp_path / "val", cli=[sys.executable, "-c", FAKE],
                      warm_cli=[sys.executable, "-c", WARM])
    best = {"label": "freeze layer2", "acc": 0.8875, "run_dir": tmp_path / "run"}
    return model, best, tmp_path / "ran.txt"


def test_both_run_before_show_and_their_output_comes_in_order_after(fake, capsys):
    model, best, ran = fake
    model.start(best)
    assert model.thread is not None
    model.thread.join(timeout=60)
    assert sorted(ran.read_text().split()) == ["export", "predict", "waiting"]  # in the background
    assert ran.read_text().split()[-1] == "predict"  # told to go once the export succeeded
    assert capsys.readouterr() == ("", "")  # nothing shown yet
    assert model.show() == 0
    out, err = capsys.readouterr()
    exported = out.index("export out")
    assert out.index("best: freeze layer2 (0.8875)") < out.index("$ packrun export") < exported
    assert exported < out.index("$ packrun predict") < out.index("predict out")
    assert "--format=MINDIR" in out[exported:out.index("\n", exported)]
    # 3 held-out images of each class, and the CSV beside the run
    predicted = out[out.index("predict out"):].split("\n", 1)[0].split()
    assert sum(p.endswith(".jpg") for p in predicted) == 6
    assert err.split() == ["export", "err", "predict", "err"]


def test_predict_starts_beside_the_export_and_runs_once_it_has_succeeded(fake, monkeypatch,
                                                                         capsys):
    """Its imports (nearly all of its time) overlap with the export's work."""
    model, best, ran = fake
    monkeypatch.setenv("FAKE_SLEEP_export", "3")
    model.start(best)
    # predict (started first) may say so before the demo's thread has started the export
    wait_for(lambda: len(model.children) == 2 and ran.is_file() and "waiting" in ran.read_text(),
             30, "predict to say it waits and the export to start", every=0.02)
    _, export = model.children
    assert export.poll() is None  # the export still runs
    assert model.show() == 0 and "predict out" in capsys.readouterr().out


def test_a_failed_export_predicts_nothing(fake, monkeypatch, capsys):
    model, best, ran = fake
    monkeypatch.setenv("FAKE_FAIL", "export")
    model.start(best)
    assert model.show() == 1
    # predict was never told to go (stopped while it waited, or before it even said so)
    assert [word for word in ran.read_text().split() if word != "waiting"] == ["export"]
    assert all(child.poll() is not None for child in model.children)
    out, err = capsys.readouterr()
    assert "export out" in out and "$ packrun predict" not in out and "export err" in err


def test_stop_ends_the_running_child_and_starts_no_other(fake, monkeypatch):
    model, best, ran = fake
    monkeypatch.setenv("FAKE_SLEEP", "60")
    model.start(best)
    wait_for(ran.is_file, 30, "the export child to start", every=0.05)
    t0 = time.monotonic()
    model.stop()
    assert model.show() == 1 and time.monotonic() - t0 < 10
    assert len(model.children) == 2 and all(c.poll() is not None for c in model.children)
    assert "predict" not in ran.read_text().split()


def test_ctrl_c_while_showing_stops_the_child(fake, monkeypatch):
    model, best, ran = fake
    monkeypatch.setenv("FAKE_SLEEP", "60")
    model.start(best)
    wait_for(ran.is_file, 30, "the export child to start", every=0.05)

    class Interrupted:  # Ctrl-C while it waits for their next line
        put = model.out.put

        def get(self):
            raise KeyboardInterrupt
    monkeypatch.setattr(model, "out", Interrupted())
    with pytest.raises(KeyboardInterrupt):
        model.show()
    assert model.children and all(c.poll() is not None for c in model.children)  # none left
    assert model.thread is not None
    model.thread.join(timeout=10)
    assert "predict" not in ran.read_text().split()


def test_nothing_started_shows_nothing_and_fails(tmp_path):
    assert BestModel(tmp_path).show() == 1


def test_the_run_kept_at_full_priority_is_one_of_the_target_runs(tmp_path):
    """The other two that load the source model yield to it (main.LONGEST): a renamed run would
    silently leave all three at a lower priority."""
    labels = [label for label, _ in variants(tmp_path)]
    assert LONGEST in labels and labels.count(LONGEST) == 1
    assert dict(variants(tmp_path))[LONGEST].get("pretrained") != ""  # it loads the source model
