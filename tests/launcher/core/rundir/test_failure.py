"""failure.json's `stall` entry (launcher/core/rundir/failure.py) and the summary the console and
`packrun status` print for a stalled attempt: the stuck rank, where it stopped, why it is the one
and its stack's top frame. (The other failure kinds: tests/launcher/supervise/test_restarts.py.)"""

import json

import pytest

from launcher.core.rundir import attempts, failure

pytestmark = pytest.mark.unit

STALL = dict(silent_s=612.3, bound_s=600.0, bound="stall_timeout", rank=1,
             why="it waits in its data pipeline; the others are not (in the collective)",
             per_rank=[dict(rank=0, stage="training", where="training epoch 2 step 1/3",
                            epoch=2, step=1, eval_batch=0, pid=10, answered=True, state="",
                            top_frame='File "/x/mindspore/graph/api.py", line 2432 in _exec_pip',
                            stack="logs/attempt_1/worker_0.stack"),
                       dict(rank=1, stage="training", where="training epoch 2 step 1/3",
                            epoch=2, step=1, eval_batch=0, pid=11, answered=True, state="",
                            top_frame='File "/job/data.py", line 7 in read',
                            stack="logs/attempt_1/worker_1.stack")])


def test_a_stalled_attempt_is_recorded_and_summarised_with_the_stuck_rank(tmp_path):
    (tmp_path / "logs").mkdir()
    n = attempts.begin(tmp_path, "run", 2, 1)
    result = attempts.Result(124, 1, reason="no rank made progress for 612 s", stall=STALL)
    record = attempts.end(tmp_path, n, result, restart_allowed=True, max_attempts=2)
    assert record is not None and record["stall"] == STALL and record["rank"] == 1
    assert json.loads((tmp_path / "failure.json").read_text())["stall"] == STALL
    assert failure.summary(record).replace(record["host"], "HOST") == (
        "attempt 1 failed: rank 1 on HOST stalled: no rank made progress for 612 s "
        "(stall_timeout 600 s) at training epoch 2 step 1/3; restarting from last.ckpt "
        "(attempt 2 of 2)\n"
        "  stuck: it waits in its data pipeline; the others are not (in the collective)\n"
        '  top frame of rank 1: File "/job/data.py", line 7 in read '
        "(logs/attempt_1/worker_1.stack)")


def test_a_stuck_rank_without_stacks_says_why_and_other_failures_have_no_stall_entry(tmp_path):
    frozen = dict(STALL, why="it did not answer the stack request (stopped (SIGSTOP))",
                  per_rank=[dict(STALL["per_rank"][1], answered=False, top_frame="",
                                 state="stopped (SIGSTOP)")])
    record = failure.failure_record(tmp_path, attempt=3, max_attempts=3, rank=1, host="n1",
                                    exit_code=None, signal=None, reason="", action="gave up",
                                    stall=frozen)
    assert failure.summary(record).splitlines()[1:] == [
        "  stuck: it did not answer the stack request (stopped (SIGSTOP))",
        "  rank 1 gave no stacks: stopped (SIGSTOP)"]
    killed = failure.failure_record(tmp_path, attempt=1, max_attempts=1, rank=0, host="n1",
                                    exit_code=None, signal=9, reason="", action="gave up")
    assert "stall" not in killed and "stalled" not in failure.summary(killed)


def test_killed_rank_is_the_first_candidate_whose_pid_the_launcher_says_was_killed(tmp_path):
    from launcher.core.rundir.names import worker_pid
    for rank, pid in ((0, 100), (1, 101), (2, 102)):
        (tmp_path / worker_pid(rank)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / worker_pid(rank)).write_text(f"{pid}\n")
    killed = {102: 9, 101: 15}   # killed_pids of a launcher's log
    assert failure.killed_rank(tmp_path, [0, 1, 2], killed) == (1, 15)
    assert failure.killed_rank(tmp_path, [0, 2, 3], killed) == (2, 9)   # rank 3: no pid file
    assert failure.killed_rank(tmp_path, [0], killed) is None
    assert failure.killed_rank(tmp_path, [0, 1, 2], {}) is None
