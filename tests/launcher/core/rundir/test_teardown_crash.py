"""A launcher that reports a crash after every rank finished (exit status 0 in each rank's exit
file) has not failed the job: MindSpore's processes now and then die while they shut down
(Open MPI reported a rank's SIGSEGV at exit in CI). `packrun run` and the Slurm batch script's
end-of-attempt decision both take the ranks' exit files as the verdict, say so, and retry
nothing."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from launcher.core.rundir import attempts
from launcher.core.rundir.names import RUN_STATE, worker_exit
from launcher.core.spec import load_job
from launcher.render.artifacts import write_run_dir
from launcher.supervise import run

pytestmark = pytest.mark.unit


def _run_dir(make_job, tmp_path, launcher="mpirun"):
    spec = load_job(make_job(launcher=launcher, cards_per_node=2, bind_cores=False))
    run_dir, _ = write_run_dir(spec, out=str(tmp_path / "runs"))
    return spec, run_dir


def _stub_launch(run_dir, spec, exits: dict[int, int], status: int):
    lines = ["#!/bin/bash"] + [f'echo {code} > "{run_dir / worker_exit(r)}"'
                               for r, code in exits.items()] + [f"exit {status}"]
    (run_dir / run.LAUNCH_SCRIPTS[spec.launcher]).write_text("\n".join(lines) + "\n")


def test_every_rank_finished_reads_every_ranks_exit_file(tmp_path):
    (tmp_path / "logs").mkdir()
    assert not attempts.every_rank_finished(tmp_path, 2)
    (tmp_path / worker_exit(0)).write_text("0\n")
    assert not attempts.every_rank_finished(tmp_path, 2)        # rank 1 said nothing
    (tmp_path / worker_exit(1)).write_text("75\n")
    assert not attempts.every_rank_finished(tmp_path, 2)        # stopped on request
    (tmp_path / worker_exit(1)).write_text("0\n")
    assert attempts.every_rank_finished(tmp_path, 2)
    assert not attempts.every_rank_finished(tmp_path, 0)


def test_run_takes_a_crash_after_every_rank_finished_as_done(make_job, tmp_path, capsys):
    spec, run_dir = _run_dir(make_job, tmp_path)
    _stub_launch(run_dir, spec, {0: 0, 1: 0}, 139)
    result = run.launch_once(run_dir, spec, 1)
    assert result.code == 0
    assert ("launch script exited with status 139 after every rank had finished with exit "
            "status 0") in capsys.readouterr().err


def test_run_still_fails_when_a_rank_did_not_finish(make_job, tmp_path):
    spec, run_dir = _run_dir(make_job, tmp_path)
    _stub_launch(run_dir, spec, {0: 0}, 139)                    # rank 1 left no exit status
    assert run.launch_once(run_dir, spec, 1).code == 139


@pytest.mark.parametrize("exits, decision, state", [
    ({0: 0, 1: 0}, "completed", "completed"),
    ({0: 0, 1: 1}, "restart", "restarting"),   # a real failure: requeued (max_restarts 3)
])
def test_the_batch_scripts_decision_after_srun_failed(make_job, tmp_path, exits, decision,
                                                      state):
    _, run_dir = _run_dir(make_job, tmp_path, launcher="msrun")
    attempts.batch_main(["begin", str(run_dir), "1"])
    for r, code in exits.items():
        (run_dir / worker_exit(r)).write_text(f"{code}\n")
    out = io.StringIO()
    with redirect_stdout(out):
        attempts.batch_main(["end", str(run_dir), "1", "139"])
    assert out.getvalue().strip() == decision
    assert json.loads((run_dir / RUN_STATE).read_text())["state"] == state
