"""One run-state model (launcher/core/rundir/state.py): one Phase vocabulary, one reader that
`status` and `ls` share, and one map of Slurm's job states to phases (launcher/slurm/client.py)."""

from __future__ import annotations

import json
import socket

import pytest

from launcher.core.rundir import attempts
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.rundir.names import JOB_JSON, LOGS, RUN_STATE
from launcher.core.rundir.state import Phase, read_run_state
from launcher.core.spec import build_spec
from launcher.slurm.client import ENDED, SLURM_PHASES, queued_phase

pytestmark = pytest.mark.unit


def test_phases_are_the_words_the_files_and_the_commands_use():
    assert [p.value for p in Phase] == ["running", "restarting", "pending", "requeued",
                                        "completed", "failed", "stopped", "not started",
                                        "corrupt"]
    assert json.dumps({"state": Phase.NOT_STARTED}) == '{"state": "not started"}'
    assert f"{Phase.RESTARTING}" == "restarting" and Phase("failed") is Phase.FAILED
    assert {p for p in Phase if p.is_terminal} == {Phase.COMPLETED, Phase.FAILED, Phase.STOPPED}
    assert {p for p in Phase if p.is_going} == {Phase.RUNNING, Phase.RESTARTING, Phase.PENDING,
                                                Phase.REQUEUED}
    assert Phase.NOT_STARTED.listed == "rendered" and Phase.FAILED.listed == "failed"


def test_one_map_of_slurms_states():
    assert set(ENDED) == {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                          "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
    assert all(SLURM_PHASES[s].is_terminal for s in ENDED)
    # what `packrun ls` makes of a job in the queue; an ended one is the files' to say
    assert {s: queued_phase(s) for s in ("RUNNING", "COMPLETING", "PENDING", "REQUEUE_HOLD",
                                         "SUSPENDED", "COMPLETED", "CANCELLED", "WHATEVER")} \
        == {"RUNNING": Phase.RUNNING, "COMPLETING": Phase.RUNNING, "PENDING": Phase.PENDING,
            "REQUEUE_HOLD": Phase.REQUEUED, "SUSPENDED": Phase.STOPPED, "COMPLETED": None,
            "CANCELLED": None, "WHATEVER": None}
    assert queued_phase(None) is None


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "r"
    (d / LOGS).mkdir(parents=True)
    spec = build_spec({"name": "r", "train_dir": str(tmp_path / "data"),
                       "val_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "runs"),
                       "epochs": 2}, check_paths=False)
    (d / JOB_JSON).write_text(spec_to_json(spec))
    return d


def test_status_and_ls_read_the_same_phase(run_dir):
    assert read_run_state(run_dir).state is Phase.NOT_STARTED
    attempts.begin(run_dir, "debug", 1, 0)                        # this process: alive
    (run_dir / LOGS / "worker_0.log").write_text("Epoch 1/2\n")
    for live in (None, False):                                   # status; ls (no worker seen)
        assert read_run_state(run_dir, live=live).state is Phase.RUNNING
    attempts.end(run_dir, 1, attempts.Result(130, user_stop=True), restart_allowed=False,
                 max_attempts=1)                                 # Ctrl-C: stopped, resumable
    (run_dir / LOGS / "worker_0.exit").write_text("143\n")
    for live in (None, False):
        assert read_run_state(run_dir, live=live).state is Phase.STOPPED


def test_a_recorded_run_whose_packrun_is_gone_failed(run_dir):
    attempts.begin(run_dir, "run", 1, 0)
    attempts.write_state(run_dir, pid=2 ** 22 + 4321, host=socket.gethostname())
    (run_dir / LOGS / "worker_0.log").write_text("Epoch 1/2\n")
    for live in (None, False):
        rs = read_run_state(run_dir, live=live)
        assert (rs.state, rs.detail) == (Phase.FAILED, "killed: no exit status")
    state = json.loads((run_dir / RUN_STATE).read_text())
    assert state["state"] == "running"                           # the file says what was written


def test_a_slurm_run_the_queue_no_longer_holds_is_read_from_its_files(run_dir):
    """The batch script recorded `running`, then scancel ended the job: status (no queue look)
    says what the attempt recorded; ls, which asked the queue, what the files show."""
    (run_dir / "slurm_job_id").write_text("42\n")
    attempts.begin(run_dir, "slurm", 1, 3, attempt=1)
    (run_dir / LOGS / "worker_0.log").write_text("Epoch 1/2\n")
    assert read_run_state(run_dir).state is Phase.RUNNING
    assert read_run_state(run_dir, queued=None, live=False).state is Phase.FAILED
    assert read_run_state(run_dir, queued=Phase.PENDING, live=False).state is Phase.REQUEUED
