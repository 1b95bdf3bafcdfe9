"""The demo's source run is handed over as soon as its best.ckpt is final (its worker at the
FINISHING stage), before the process ends; a run that fails before that is a failure."""

from __future__ import annotations

import os
import sys
import time

import pytest

from launcher.demo.main import SourceRun
from launcher.demo.side_by_side import TAIL_NICE

pytestmark = pytest.mark.unit

# a stand-in worker: best.ckpt, then rank 0's progress record at FINISHING, then its last
# seconds (pictures, exit)
FINISHES = """
import os, sys, time
from pathlib import Path
from launcher.core.rundir.names import BEST_CKPT
from launcher.core.rundir.progress import Progress, Stage, write_progress
run_dir = Path(sys.argv[1])
(run_dir / BEST_CKPT).write_bytes(b"weights")
write_progress(run_dir, Progress(rank=0, pid=os.getpid(), attempt=1, seq=1, time=time.time(),
                                 stage=Stage.FINISHING))
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[3]))
"""


def source_run(tmp_path, *args):
    def prepare(spec):
        run_dir = tmp_path / "run"
        (run_dir / "logs").mkdir(parents=True)
        return run_dir, "prepared\n"
    return SourceRun(prepare=prepare, command=lambda run_dir: [
        sys.executable, "-c", FINISHES, str(run_dir), *map(str, args)])


def test_handed_over_at_finishing_before_the_process_ends(tmp_path):
    run = source_run(tmp_path, 3, 0)
    t0 = time.monotonic()
    assert run("spec") == tmp_path / "run"
    assert time.monotonic() - t0 < 2.5 and run.proc is not None and run.proc.poll() is None
    # its last seconds (closing lines, pictures) yield to the target runs starting now
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, run.proc.pid) == max(mine, TAIL_NICE)
    looks: list[float] = []  # the demo starts and watches the target runs meanwhile
    assert run.wait(lambda: looks.append(time.monotonic())) == 0
    assert time.monotonic() - t0 >= 3 and len(looks) > 5


def test_a_failure_after_finishing_is_the_exit_status_and_stop_ends_it(tmp_path):
    run = source_run(tmp_path, 0.5, 3)
    assert run("spec") == tmp_path / "run"
    assert run.wait() == 3
    again = source_run(tmp_path / "again", 60, 0)
    assert again("spec") is not None
    again.stop()
    assert again.proc is not None and again.proc.poll() is not None


def test_a_run_that_fails_before_its_checkpoint_is_final_is_none(tmp_path):
    def prepare(spec):
        (tmp_path / "run").mkdir()
        return tmp_path / "run", ""
    run = SourceRun(prepare=prepare,
                    command=lambda d: [sys.executable, "-c", "raise SystemExit(2)"])
    assert run("spec") is None and run.wait() == 2


def test_a_reused_source_model_has_nothing_to_wait_for():
    assert SourceRun().wait() == 0
