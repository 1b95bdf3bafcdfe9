"""The stall watchdog's decisions (launcher/supervise/stall.py): the state machine fed progress
records and a clock, the rank that differs from the others, and the frame a stack dump names."""

import pytest

from launcher.core.rundir.progress import Event, Progress, Stage
from launcher.supervise.stall import Answer, StallWatch, in_data_pipeline, odd_rank, top_frame

pytestmark = pytest.mark.unit


class Ranks:
    """Records as workers would make them: `step`, `stage`, `batch` advance a rank's seq."""

    def __init__(self, world: int, attempt: int = 1):
        self.now: dict[int, Progress] = {
            r: Progress(rank=r, pid=1000 + r, attempt=attempt, seq=0, time=0.0,
                        stage=Stage.STARTING) for r in range(world)}

    def step(self, rank: int, epoch: int, step: int, steps: int = 10) -> None:
        self.now[rank] = self.now[rank].advanced(
            event=Event.STEP, stage=Stage.TRAINING, epoch=epoch, step=step, steps_per_epoch=steps,
            global_step=(epoch - 1) * steps + step, eval_batch=0, time=0.0)

    def stage(self, rank: int, stage: Stage) -> None:
        self.now[rank] = self.now[rank].advanced(event=Event.STAGE, stage=stage, eval_batch=0,
                                                 time=0.0)

    def batch(self, rank: int, n: int) -> None:
        self.now[rank] = self.now[rank].advanced(event=Event.BATCH, eval_batch=n, time=0.0)

    def restart(self, rank: int, pid: int) -> None:
        self.now[rank] = Progress(rank=rank, pid=pid, attempt=self.now[rank].attempt, seq=0,
                                  time=0.0, stage=Stage.STARTING)

    def records(self) -> dict[int, Progress]:
        return dict(self.now)


def trained(world: int, watch: StallWatch, t: float) -> Ranks:
    """Every rank through its first step at time t."""
    ranks = Ranks(world)
    watch.feed(ranks.records(), t)
    for r in range(world):
        ranks.stage(r, Stage.COMPILING)
        ranks.step(r, 1, 1)
    assert watch.feed(ranks.records(), t) is None
    return ranks


def test_no_progress_for_stall_timeout_is_a_stall_and_any_progress_resets_it():
    watch = StallWatch(2, stall_timeout=30, startup_timeout=100, now=0.0)
    ranks = trained(2, watch, 5.0)
    assert watch.feed(ranks.records(), 35.0) is None          # 30 s: not over the bound
    ranks.step(0, 1, 2)                                       # one rank progressing is enough
    assert watch.feed(ranks.records(), 36.0) is None
    assert watch.feed(ranks.records(), 66.0) is None
    stall = watch.feed(ranks.records(), 66.5)
    assert stall is not None and stall.bound_name == "stall_timeout" and stall.bound_s == 30
    assert stall.silent_s == pytest.approx(30.5)
    assert stall.last[1].step == 1 and stall.last[0].step == 2
    assert stall.describe() == "no rank made progress for 30 s (stall_timeout 30 s)"


def test_startup_has_its_own_bound_until_every_rank_has_stepped():
    watch = StallWatch(2, stall_timeout=30, startup_timeout=100, now=0.0)
    ranks = Ranks(2)
    assert watch.feed({}, 99.0) is None                       # nothing yet: startup bound
    stall = watch.feed({}, 101.0)
    assert stall is not None and stall.bound_name == "startup_timeout"
    assert stall.last == {0: None, 1: None}
    watch = StallWatch(2, stall_timeout=30, startup_timeout=100, now=0.0)
    watch.feed(ranks.records(), 1.0)
    ranks.stage(0, Stage.COMPILING)
    ranks.stage(1, Stage.COMPILING)
    watch.feed(ranks.records(), 2.0)
    assert watch.feed(ranks.records(), 90.0) is None           # compiling for 88 s
    ranks.step(0, 1, 1)                                        # rank 1 still compiling
    watch.feed(ranks.records(), 91.0)
    assert watch.feed(ranks.records(), 190.0) is None
    assert watch.feed(ranks.records(), 192.0).bound_name == "startup_timeout"
    # a startup_timeout below stall_timeout is raised to it
    assert StallWatch(1, 60, 10, 0.0).bound() == (60, "startup_timeout")


def test_evaluation_batches_are_progress_and_waiting_ranks_are_not_stalled():
    watch = StallWatch(3, stall_timeout=30, startup_timeout=100, now=0.0)
    ranks = trained(3, watch, 0.0)
    ranks.stage(0, Stage.EVALUATING)                           # eval_mode rank0
    ranks.stage(1, Stage.WAITING)
    ranks.stage(2, Stage.WAITING)
    watch.feed(ranks.records(), 1.0)
    # the first batch of the process's first evaluation compiles: the startup bound
    assert watch.bound() == (100, "startup_timeout")
    assert watch.feed(ranks.records(), 80.0) is None
    t = 80.0
    for n in range(1, 20):                                    # 19 batches of 20 s: 380 s
        t += 20.0
        ranks.batch(0, n)
        assert watch.feed(ranks.records(), t) is None
    assert watch.bound() == (30, "stall_timeout")
    ranks.stage(0, Stage.SAVING)                              # a save is progress
    assert watch.feed(ranks.records(), t + 29) is None
    # the next evaluation of the same process compiles nothing: stall_timeout from its start
    ranks.stage(0, Stage.EVALUATING)
    watch.feed(ranks.records(), t + 30)
    assert watch.feed(ranks.records(), t + 61).bound_name == "stall_timeout"


def test_sink_mode_allows_the_longest_chunk_seen_on_top_of_stall_timeout():
    watch = StallWatch(1, stall_timeout=30, startup_timeout=100, now=0.0, sink=True)
    ranks = Ranks(1)
    ranks.stage(0, Stage.COMPILING)
    watch.feed(ranks.records(), 0.0)
    ranks.step(0, 1, 50, steps=100)                           # first chunk of 50 steps, compiled
    watch.feed(ranks.records(), 90.0)
    assert watch.bound() == (30, "stall_timeout")             # no chunk interval seen yet
    ranks.step(0, 1, 100, steps=100)                          # a chunk takes 45 s
    watch.feed(ranks.records(), 135.0)
    assert watch.bound() == (75, "stall_timeout")
    assert watch.feed(ranks.records(), 209.0) is None          # 74 s: a chunk, still running
    assert watch.feed(ranks.records(), 211.0) is not None
    # without sink mode the same 45 s steps leave the bound at stall_timeout
    plain = StallWatch(1, 30, 100, 0.0)
    ranks = Ranks(1)
    ranks.stage(0, Stage.COMPILING)
    plain.feed(ranks.records(), 0.0)
    for i, t in enumerate((10.0, 55.0), 1):
        ranks.step(0, 1, i)
        plain.feed(ranks.records(), t)
    assert plain.bound() == (30, "stall_timeout")


def test_a_restarted_workers_new_pid_is_progress_and_compiles_again():
    watch = StallWatch(2, stall_timeout=30, startup_timeout=100, now=0.0)
    ranks = trained(2, watch, 0.0)
    assert watch.feed(ranks.records(), 20.0) is None
    ranks.restart(1, pid=4242)                                # same seq 0..: a new process
    ranks.now[1] = ranks.now[1].advanced(time=0.0)            # seq 1, as the old record had
    assert watch.feed(ranks.records(), 25.0) is None
    assert watch.bound() == (100, "startup_timeout")          # it starts (compiles) again
    assert watch.feed(ranks.records(), 120.0) is None
    assert watch.feed(ranks.records(), 126.0) is not None


def test_records_of_another_attempt_and_finished_ranks():
    watch = StallWatch(1, stall_timeout=30, startup_timeout=40, now=0.0, attempt=2)
    old = Ranks(1, attempt=1)
    old.step(0, 3, 3)
    assert watch.feed(old.records(), 39.0) is None
    assert watch.feed(old.records(), 41.0).last == {0: None}  # the stale record is not this one
    done = StallWatch(2, 30, 40, 0.0)
    ranks = trained(2, done, 0.0)
    ranks.stage(0, Stage.DONE)
    ranks.stage(1, Stage.DONE)
    done.feed(ranks.records(), 1.0)
    assert done.feed(ranks.records(), 10_000.0) is None         # finished: nothing to wait for
    off = StallWatch(1, 0, 40, 0.0)                            # stall_timeout = 0: no watchdog
    assert not off.enabled and off.feed({}, 10_000.0) is None


# ---------------------------------------------------------------------------------------------
# Who is stuck
# ---------------------------------------------------------------------------------------------

HUNG = '''Thread 0x00007f0000000002 (most recent call first):
  File "/work/repo/src/testing/faults.py", line 118 in hang_in_data_loader
  File "/work/repo/src/testing/faults.py", line 140 in fault
  File "/venv/lib/python3.11/site-packages/mindspore/dataset/transforms/py_transforms_util.py", line 90 in __call__

Current thread 0x00007f0000000001 (most recent call first):
  File "/venv/lib/python3.11/site-packages/mindspore/dataset/engine/iterators.py", line 160 in _get_next
  File "/venv/lib/python3.11/site-packages/mindspore/dataset/engine/iterators.py", line 190 in __next__
  File "/venv/lib/python3.11/site-packages/mindspore/train/model.py", line 1100 in _train_process
  File "/work/repo/src/train.py", line 330 in fit
'''  # noqa: E501

IN_COLLECTIVE = '''Thread 0x00007f0000000003 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 324 in wait
  File "/usr/lib/python3.11/threading.py", line 622 in wait

Current thread 0x00007f0000000001 (most recent call first):
  File "/venv/lib/python3.11/site-packages/mindspore/common/api.py", line 1000 in __call__
  File "/venv/lib/python3.11/site-packages/mindspore/nn/cell.py", line 700 in __call__
  File "/venv/lib/python3.11/site-packages/mindspore/train/model.py", line 1120 in _train_process
'''


def test_top_frame_is_the_jobs_own_innermost_frame_else_the_first_threads():
    assert top_frame(HUNG) == \
        'File "/work/repo/src/testing/faults.py", line 118 in hang_in_data_loader'
    assert top_frame(IN_COLLECTIVE) == \
        'File "/usr/lib/python3.11/threading.py", line 324 in wait'
    assert top_frame("") == ""
    assert in_data_pipeline(HUNG) and not in_data_pipeline(IN_COLLECTIVE)


def _at(world: int, stage=Stage.TRAINING) -> dict[int, Progress]:
    ranks = Ranks(world)
    for r in range(world):
        ranks.step(r, 2, 1)
        if stage is not Stage.TRAINING:
            ranks.stage(r, stage)
    return ranks.records()


def test_in_a_data_loader_hang_the_stacks_name_the_rank_not_in_the_collective():
    last = _at(2)                                              # both stopped after step 2.1
    rank, why = odd_rank(last, {0: Answer(True, IN_COLLECTIVE), 1: Answer(True, HUNG)})
    assert rank == 1 and "data pipeline" in why
    assert odd_rank(last, {0: Answer(True, IN_COLLECTIVE), 1: Answer(True, IN_COLLECTIVE)}) == \
        (None, "every rank stopped at the same point")
    assert odd_rank(_at(1), {0: Answer(True, HUNG)}) == (0, "the only rank")


def test_a_rank_that_cannot_answer_is_the_odd_one():
    last = _at(3)
    answers = {0: Answer(True, IN_COLLECTIVE), 1: Answer(False, state="stopped (SIGSTOP)"),
               2: Answer(True, IN_COLLECTIVE)}
    assert odd_rank(last, answers) == \
        (1, "it did not answer the stack request (stopped (SIGSTOP))")
    # ranks on other hosts are not asked: that is no reason to single one out
    far = {0: Answer(True, IN_COLLECTIVE), 1: Answer(False, state="not on this host"),
           2: Answer(True, IN_COLLECTIVE)}
    assert odd_rank(last, far)[0] is None


def test_the_rank_everyone_waits_for_or_that_lags_behind_is_the_odd_one():
    last = _at(3, Stage.WAITING)
    ranks = Ranks(3)
    ranks.now = dict(last)
    ranks.stage(0, Stage.EVALUATING)
    ranks.batch(0, 7)
    rank, why = odd_rank(ranks.records(), {})
    assert rank == 0 and why == "the others wait for it (evaluating epoch 2 (batch 7))"
    behind = Ranks(3)
    for r in range(3):
        behind.step(r, 2, 1)
    behind.step(0, 2, 2)
    behind.step(2, 2, 2)
    rank, why = odd_rank(behind.records(), {})
    assert rank == 1 and why == ("it is at training epoch 2 step 1/10, the others at training "
                                 "epoch 2 step 2/10")
    missing = _at(2)
    missing[1] = None
    assert odd_rank(missing, {}) == (1, "it never reported progress")
