"""failure.json explains a failed Ascend launch from the logs' known error lines
(launcher/core/rundir/failure.py with launcher/core/ascend/signatures.py): the failing rank's
log and CANN plog, then every other log; the console summary says it with the next step; an
unknown failure keeps today's record and summary."""

import json

import pytest

from launcher.core.rundir import failure
from tests.launcher.core.ascend import reference as ref

pytestmark = pytest.mark.unit


def run_dir_with(tmp_path, files: dict[str, str]):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "logs").mkdir(exist_ok=True)
    return tmp_path


def record(run_dir, rank):
    return failure.failure_record(run_dir, attempt=1, max_attempts=1, rank=rank, host="n1",
                                  exit_code=1, signal=None, reason="", action=failure.GAVE_UP)


def test_a_card_held_by_an_earlier_run_is_found_in_another_ranks_plog(tmp_path):
    ei0006 = (ref.FIXTURES / "log_EI0006_vllm-ascend-issue-486_excerpt.txt").read_text()
    ej0001 = (ref.FIXTURES / "log_EJ0001_LlamaFactory-issue-3839_excerpt.txt").read_text()
    run_dir = run_dir_with(tmp_path, {
        "logs/worker_1.log": "training...\n" + ei0006,
        "logs/ascend/rank_3/plog/plog-927000_20240521115754.log": ej0001})
    rec = record(run_dir, 1)
    found = rec["explanation"]
    assert found["code"] == "EJ0001" and found["rank"] == 3
    assert found["file"] == "logs/ascend/rank_3/plog/plog-927000_20240521115754.log"
    failure.write_failure(run_dir, rec)
    assert json.loads((run_dir / "failure.json").read_text())["explanation"] == found
    text = failure.summary(rec)
    assert "EJ0001 in logs/ascend/rank_3/plog/" in text and "still held" in text
    assert "next: list what holds the cards with `npu-smi info`" in text


def test_the_remote_rank_of_a_notify_timeout_is_named(tmp_path):
    ei0002 = (ref.FIXTURES / "log_EI0002_vllm-ascend-issue-3413_excerpt.txt").read_text()
    run_dir = run_dir_with(tmp_path, {"logs/worker_25.log": ei0002})
    text = failure.summary(record(run_dir, 25))
    assert "waited in a collective operation for rank 24" in text
    assert "next: read rank 24's log (logs/worker_24.log)" in text


def test_an_unknown_failure_keeps_todays_summary(tmp_path):
    run_dir = run_dir_with(tmp_path, {"logs/worker_0.log": "ValueError: no\n"})
    rec = record(run_dir, 0)
    assert "explanation" not in rec
    assert failure.summary(rec) == ("attempt 1 failed: rank 0 on n1 exited with status 1; "
                                    "giving up after 1 attempt(s) (max_restarts reached)\n"
                                    "  first error: ValueError: no")
