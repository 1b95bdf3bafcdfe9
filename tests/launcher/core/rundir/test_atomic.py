"""Atomic state: a process killed with SIGKILL at random moments while it rewrites a checkpoint
(save_atomic) and a metrics file (write_atomic), as the worker does at every epoch end, leaves
both readable and each one of the versions it wrote; the temporary files of a killed save are
removed by the next save of the same file (checkpoints: src/training/checkpoint.remove_stale_temps,
text files: launcher/core/rundir/atomic.remove_stale_temps)."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from launcher.core.rundir import atomic
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.metrics import metrics_text, read_metrics
from src.training.checkpoint import remove_stale_temps, save_atomic

KILLS = 10
PARAMS = {"a": (1024, 1024), "b": (1024, 512), "c": (3,)}  # 6 MB: a save takes tens of ms

# Version v = start, start + 1, ...: rewrites metrics.jsonl (rows epoch 1..v-start+1, each with
# "version" v), then state.ckpt (every value v, "version" v), as EvalCallBack writes metrics.jsonl
# then last.ckpt. Prints "ready" once imported.
WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import mindspore as ms
    import numpy as np
    from launcher.core.rundir.metrics import metrics_text
    from launcher.core.rundir.layout import write_atomic
    from src.training.checkpoint import save_atomic
    run_dir, start, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    shapes = {shapes}
    print("ready", flush=True)
    for v in range(start, start + count):
        rows = [{{"epoch": e, "version": v}} for e in range(1, v - start + 2)]
        write_atomic(run_dir / "metrics.jsonl", metrics_text(rows))
        state = [{{"name": n, "data": ms.Tensor(np.full(s, v, np.float32))}}
                 for n, s in shapes.items()]
        save_atomic(state, run_dir / "state.ckpt", append_dict={{"version": v}})
""").format(shapes=PARAMS)


def writer(run_dir: Path, start: int, count: int = 10**6) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), str(start), str(count)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])


def loaded_version(run_dir: Path) -> int:
    """The checkpoint's version, after checking it is one complete version."""
    state = ms.load_checkpoint(str(run_dir / "state.ckpt"))
    version = int(state.pop("version"))
    assert sorted(state) == sorted(PARAMS)
    for name, shape in PARAMS.items():
        value = state[name].asnumpy()
        assert value.shape == shape and (value == version).all(), f"{name} mixes versions"
    return version


def ckpt_temps(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".state.tmp*"))


@pytest.mark.e2e
def test_kill_during_saves_leaves_a_valid_version_and_no_growing_temps(tmp_path):
    zeros = [{"name": n, "data": ms.Tensor(np.zeros(s, np.float32))} for n, s in PARAMS.items()]
    save_atomic(zeros, tmp_path / "state.ckpt", append_dict={"version": 0})
    write_atomic(tmp_path / "metrics.jsonl", metrics_text([{"epoch": 1, "version": 0}]))
    rng = random.Random(0)
    version, mid_save = 0, 0
    for i in range(1, KILLS + 1):
        proc = writer(tmp_path, start=i * 1000)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        new = loaded_version(tmp_path)
        assert new >= version  # never rolled back to an older file
        version = new
        metrics = read_metrics(tmp_path)
        assert [r["epoch"] for r in metrics] == list(range(1, len(metrics) + 1))  # complete
        assert len({r["version"] for r in metrics}) == 1  # one version
        assert metrics[0]["version"] >= version  # written before the checkpoint, as in a run
        temps = ckpt_temps(tmp_path)
        assert len(temps) <= 1, temps  # only this kill's: the restart's first save cleaned up
        mid_save += bool(temps)
    assert version > 0, "no writer got as far as one save: kill later"
    print(f"{KILLS} kills, {mid_save} inside a checkpoint save, last version {version}")
    assert mid_save >= 1, "no kill landed inside a save: the test proved nothing"
    proc = writer(tmp_path, start=10**6, count=1)
    assert proc.wait() == 0
    assert loaded_version(tmp_path) == 10**6
    assert ckpt_temps(tmp_path) == []


@pytest.mark.unit
def test_stale_temps_of_dead_processes_go_and_live_ones_stay(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f".best.tmp{dead.pid}.ckpt", tmp_path / f".best.tmp{dead.pid}.tmp"]
    live = tmp_path / f".best.tmp{os.getppid()}.ckpt"   # a running process may be mid-save
    other = tmp_path / f".last.tmp{dead.pid}.ckpt"      # another file's: its own save cleans it
    for p in (*stale, live, other):
        p.write_bytes(b"partial")
    assert sorted(remove_stale_temps(tmp_path / "best.ckpt")) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


@pytest.mark.unit
def test_a_text_write_removes_what_killed_writes_of_the_same_file_left(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".last.json.{dead.pid}.k2j4x_9a.tmp"
    live = tmp_path / f".last.json.{os.getppid()}.q8a0sd1z.tmp"    # a running writer's
    other = tmp_path / f".metrics.jsonl.{dead.pid}.a1b2c3d4.tmp"   # another file's
    for p in (stale, live, other):
        p.write_text("partial")
    write_atomic(tmp_path / "last.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.json", live.name,
                                                                 other.name])
    assert atomic.remove_stale_temps(tmp_path / "metrics.jsonl") == [other]
