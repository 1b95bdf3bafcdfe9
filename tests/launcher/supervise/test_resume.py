"""Resume: a debug run killed with SIGKILL during epoch 3 of 4 and continued with
`packrun debug --resume RUN_DIR` ends exactly where an uninterrupted run with the same seed ends:
the same metrics row by row, the same best.ckpt and last.ckpt, the same final weights.

Tolerance: none. On CPU both runs are bit-for-bit equal (losses compared with ==, checkpoints
with np.array_equal), because everything a resumed epoch depends on is restored or recomputed:
weights, BatchNorm statistics, optimizer moments and global_step (the warm-up + cosine schedule
here would shift if global_step restarted), the data order and augmentation seed of each epoch,
and best-so-far from the metrics history.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import psutil
import pytest

from tests.helpers import (
    INTERRUPTED_JOB,
    REPO,
    digests,
    packrun,
    packrun_argv,
    packrun_env,
    write_tiny_job,
)

# (pytest-xdist builds a module fixture once per worker that runs a test using it. The tests
# that share `runs` (a killed debug run and its resume) are one xdist group, so that README's
# `-n 3 --dist loadgroup` builds it once. The uninterrupted run they compare with is trained
# once per session: conftest reference_run.)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("resume_runs")]

# test_restarts' job (INTERRUPTED_JOB), one epoch longer: the kill lands in epoch 3 and the
# resumed run still crosses an epoch boundary (3 to 4)
JOB = INTERRUPTED_JOB | dict(epochs=4)
EPOCHS, KILL_IN_EPOCH = JOB["epochs"], 3


@pytest.fixture(scope="module")
def job(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("resume")
    return write_tiny_job(d / "resume.toml", digits_2class, **JOB)


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def arrays(ckpt: Path) -> dict:
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(ckpt)).items()}


def saved_epoch(run_dir: Path, epoch: int) -> bool:
    """Epoch `epoch` is complete: its row is in metrics.jsonl and last.ckpt (written after the
    row) is newer than the row."""
    last, metrics = run_dir / "last.ckpt", run_dir / "metrics.jsonl"
    return len(rows(run_dir)) == epoch and last.exists() and \
        last.stat().st_mtime_ns >= metrics.stat().st_mtime_ns


def run_dir_in(console: Path) -> Path | None:
    found = [l for l in console.read_text().splitlines() if l.startswith("packrun: run directory ")]
    return Path(found[0].split("packrun: run directory ", 1)[1]) if found else None


def start_and_kill_in_epoch_3(job: Path, console: Path) -> tuple[Path, subprocess.Popen]:
    """Start a debug run and SIGKILL its worker's process group as soon as epoch 2 is saved."""
    with open(console, "w") as out:
        proc = subprocess.Popen(packrun_argv("debug", job, "--name=killed"), cwd=REPO,
                                env=packrun_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            run_dir = run_dir_in(console)
            if run_dir and saved_epoch(run_dir, KILL_IN_EPOCH - 1):
                # the worker (src/train.py RUN_DIR), not the lifeline's watcher, which names
                # the run directory too
                worker = next(p for p in psutil.Process(proc.pid).children(recursive=True)
                              if str(run_dir) in p.cmdline()
                              and any(a.endswith("train.py") for a in p.cmdline()))
                os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pipeline processes
                proc.wait(timeout=60)
                return run_dir, proc
            time.sleep(0.02)
    proc.kill()
    raise AssertionError("the run did not reach epoch 3:\n" + console.read_text()[-3000:])


@pytest.fixture(scope="module")
def runs(job, tmp_path_factory, reference_run):
    t0 = time.monotonic()
    full = reference_run("debug", **JOB)   # the uninterrupted run
    t_full = time.monotonic() - t0
    console = tmp_path_factory.mktemp("console") / "killed.out"
    killed, proc = start_and_kill_in_epoch_3(job, console)
    killed_rows = rows(killed)
    resumed = packrun("debug", "--resume", killed)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    print(f"uninterrupted run {t_full:.1f} s (0 once trained), whole test "
          f"{time.monotonic() - t0:.1f} s")
    return dict(full=full, killed=killed, proc=proc, console=console.read_text(),
                killed_rows=killed_rows, resumed=resumed)


def test_the_kill_landed_in_epoch_3_and_packrun_says_how_to_resume(runs):
    assert runs["proc"].returncode == 128 + signal.SIGKILL
    assert [r["epoch"] for r in runs["killed_rows"]] == [1, 2]
    assert f"packrun debug --resume {runs['killed']}" in runs["console"]
    assert f"resuming from {runs['killed'] / 'last.ckpt'}: epoch 2 of {EPOCHS} done" in \
        runs["resumed"].stdout


def test_resumed_run_has_the_metrics_of_an_uninterrupted_one(runs):
    full, resumed = rows(runs["full"]), rows(runs["killed"])
    assert [r["epoch"] for r in resumed] == list(range(1, EPOCHS + 1))
    for a, b in zip(full, resumed):
        for k in ("train_loss", "val_acc", "best_acc", "best_epoch", "lr", "steps"):
            assert a[k] == b[k], f"epoch {a['epoch']} {k}: {a[k]} uninterrupted, {b[k]} resumed"
    assert digests(runs["full"], 1) == digests(runs["killed"], 1)


def test_resumed_run_leaves_the_same_best_and_last_checkpoints(runs):
    for name in ("best.ckpt", "last.ckpt"):
        a, b = arrays(runs["full"] / name), arrays(runs["killed"] / name)
        assert sorted(a) == sorted(b)
        different = [k for k in a if not np.array_equal(a[k], b[k])]
        assert different == [], f"{name}: {different[:5]}"
    last = ms.load_checkpoint(str(runs["killed"] / "last.ckpt"))
    assert int(last["epoch"].asnumpy()) == EPOCHS
    assert int(last["global_step"].asnumpy()[0]) == EPOCHS * 48 // 8  # steps of all epochs
    assert any(k.startswith("moments.") for k in last)
    assert not list(runs["killed"].glob(".*tmp*"))  # no temporary file left by the kill
