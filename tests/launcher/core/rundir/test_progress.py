"""The progress record: written whole, read back equal, every rank's found, cleared per attempt;
a reader never sees a part of a record while a writer replaces it."""

import json
import multiprocessing
import os

import pytest

from launcher.core.rundir.names import worker_progress
from launcher.core.rundir.progress import (
    Event,
    Progress,
    Stage,
    clear_progress,
    read_all_progress,
    read_progress,
    write_progress,
)

pytestmark = pytest.mark.unit


def record(rank=0, seq=1, **kw):
    return Progress(rank=rank, pid=os.getpid(), attempt=1, seq=seq, time=1.5e9,
                    stage=kw.pop("stage", Stage.TRAINING), **kw)


def test_a_record_reads_back_equal(tmp_path):
    (tmp_path / "logs").mkdir()
    r = record(epoch=2, step=3, steps_per_epoch=5, global_step=8, loss=0.25, lr=0.01,
               step_time_s=0.1, images_per_s=80.0, event=Event.STEP)
    write_progress(tmp_path, r)
    assert read_progress(tmp_path, 0) == r
    assert json.loads((tmp_path / worker_progress(0)).read_text())["stage"] == "training"


def test_every_rank_is_found_and_a_new_attempt_starts_from_none(tmp_path):
    (tmp_path / "logs").mkdir()
    for rank in (0, 1, 10):
        write_progress(tmp_path, record(rank=rank, seq=rank + 1))
    (tmp_path / "logs" / "worker_2.progress").write_text("{not json")
    found = read_all_progress(tmp_path)
    assert sorted(found) == [0, 1, 10] and found[10].seq == 11
    clear_progress(tmp_path)
    assert read_all_progress(tmp_path) == {} and read_progress(tmp_path, 0) is None


def test_advanced_counts_and_where_says_it():
    r = record(epoch=0, stage=Stage.COMPILING)
    assert r.where() == "compiling"
    nxt = r.advanced(time=2e9, stage=Stage.EVALUATING, epoch=3, eval_batch=4)
    assert nxt.seq == r.seq + 1 and nxt.where() == "evaluating epoch 3 (batch 4)"
    assert record(epoch=2, step=7, steps_per_epoch=20).where() == "training epoch 2 step 7/20"


def test_a_reader_of_older_or_newer_records_keeps_what_it_knows():
    d = json.loads(record().to_json())
    d.pop("event")
    d["from_the_future"] = 1
    r = Progress.from_dict(d)
    assert r.event is Event.STAGE and r.stage is Stage.TRAINING


def _rewrite(run_dir, n):
    r = record()
    for i in range(n):
        r = r.advanced(time=float(i), loss=float(i))
        write_progress(run_dir, r)


def test_a_reader_never_sees_a_partial_record(tmp_path):
    (tmp_path / "logs").mkdir()
    write_progress(tmp_path, record())
    writer = multiprocessing.get_context("fork").Process(target=_rewrite, args=(tmp_path, 1000))
    writer.start()
    seen = 0
    while writer.is_alive():
        assert read_progress(tmp_path, 0) is not None  # never None once a record exists
        seen += 1
    writer.join()
    assert writer.exitcode == 0 and seen > 0
    assert read_progress(tmp_path, 0).seq == 1001
