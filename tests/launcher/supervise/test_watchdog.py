"""The stall watchdog's process side (launcher/supervise/watchdog.py) on real processes that answer
the stack request as workers do (src/train.py answer_stack_requests): a rank frozen by SIGSTOP is
named as such within the answer time and the rest goes on; the `watching` thread stops a launch
that makes no progress and leaves one that does alone. (Workers that really hang: the e2e tests
in test_restarts.py; the batch program's: tests/launcher/node/test_batch.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.core.rundir.names import worker_stack
from launcher.core.rundir.progress import Event, Progress, Stage, read_progress, write_progress
from launcher.core.spec import load_job
from launcher.supervise.stall import Stall, odd_rank
from launcher.supervise.watchdog import Watchdog, ask_stacks, find_py_spy, watching
from tests.helpers import REPO, wait_for

pytestmark = pytest.mark.unit

WORKER = """
import os, sys, time
from pathlib import Path
from launcher.core.rundir.progress import Event, Progress, Stage, read_progress, write_progress
from src.train import answer_stack_requests

run_dir, rank, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
answer_stack_requests(run_dir, rank)
p = Progress(rank=rank, pid=os.getpid(), attempt=1, seq=0, time=time.time(),
             stage=Stage.COMPILING)
write_progress(run_dir, p)
for step in range(1, steps + 1):
    time.sleep(0.1)
    p = p.advanced(event=Event.STEP, stage=Stage.TRAINING, epoch=1, step=step,
                   steps_per_epoch=steps, global_step=step, time=time.time())
    write_progress(run_dir, p)


def waits_for_good():
    while True:
        time.sleep(1)


waits_for_good()
"""


def _start(run_dir: Path, rank: int, steps: int) -> subprocess.Popen:
    script = run_dir / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), str(run_dir), str(rank), str(steps)],
                            env=os.environ | {"PYTHONPATH": str(REPO)}, start_new_session=True)


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "logs").mkdir()
    return tmp_path


def _record(run_dir: Path, rank: int) -> Progress:
    record = read_progress(run_dir, rank)
    assert record is not None
    return record


def _step(run_dir: Path, rank: int) -> int:
    record = read_progress(run_dir, rank)
    return record.step if record else -1


def test_a_frozen_rank_is_named_within_the_answer_time_and_the_others_stacks_are_kept(run_dir):
    procs = [_start(run_dir, r, 1) for r in (0, 1)]
    try:
        for r in (0, 1):
            wait_for(lambda r=r: _step(run_dir, r) == 1, 60, f"rank {r}'s first step")
        os.kill(procs[1].pid, signal.SIGSTOP)
        last = {r: _record(run_dir, r) for r in (0, 1)}
        stall = Stall(31.0, 30.0, "stall_timeout", last)
        t0 = time.monotonic()
        answers = ask_stacks(run_dir, stall, answer_s=1.0)
        took = time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert took < 1.0 + 25, took          # the answer time, and py-spy's bound
    assert answers[0].answered and " in waits_for_good" in answers[0].text
    assert not answers[1].answered and answers[1].state == "stopped (SIGSTOP)"
    frozen = (run_dir / worker_stack(1)).read_text()
    assert f"packrun: rank 1 (pid {procs[1].pid}) did not answer within 1 s: stopped " \
           "(SIGSTOP)" in frozen
    assert "=== packrun stall watchdog: no rank made progress for 31 s (stall_timeout 30 s); " \
           f"SIGUSR2 to pid {procs[1].pid} at " in frozen
    if find_py_spy():
        assert f"=== py-spy dump --native --pid {procs[0].pid} ===" in \
            (run_dir / worker_stack(0)).read_text()
    assert odd_rank(last, answers) == \
        (1, "it did not answer the stack request (stopped (SIGSTOP))")
    gone = Stall(31.0, 30.0, "stall_timeout", {0: last[0]})   # its process has ended
    assert ask_stacks(run_dir, gone, answer_s=1.0)[0].state == "not on this host"


def _watchdog(make_job, run_dir: Path, world: int, stall_s: int) -> Watchdog:
    spec = load_job(make_job(stall_timeout=stall_s, startup_timeout=stall_s),
                    check_paths=False)
    return Watchdog(run_dir, spec, 1, world)


def test_watching_stops_a_launch_without_progress(make_job, run_dir):
    proc = _start(run_dir, 0, 1)
    stopped = []
    try:
        with watching(_watchdog(make_job, run_dir, 1, 1),
                      lambda: stopped.append(proc.kill()), every_s=0.1) as watch:
            proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert stopped and watch.report is not None
    fields = watch.result_fields()
    assert (fields["code"], fields["rank"]) == (124, 0)
    assert fields["stall"]["per_rank"][0]["top_frame"].endswith(" in waits_for_good")
    assert fields["reason"].startswith("no rank made progress for ")


def test_watching_leaves_a_progressing_launch_alone(make_job, run_dir):
    """12 steps of 0.1 s, 1.2 s in all, under a 1 s stall_timeout; then a record of DONE."""
    proc = _start(run_dir, 0, 12)
    try:
        with watching(_watchdog(make_job, run_dir, 1, 1), proc.kill, every_s=0.1) as watch:
            wait_for(lambda: _step(run_dir, 0) == 12, 60, "the 12th step")
            write_progress(run_dir, _record(run_dir, 0).advanced(stage=Stage.DONE,
                                                                 event=Event.STAGE))
            time.sleep(1.5)   # finished: no stall however long it takes to exit
            assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    assert watch.report is None
    with watching(None, proc.kill) as nothing:    # no watchdog: nothing watched
        pass
    assert nothing.report is None
