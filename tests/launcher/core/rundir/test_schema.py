"""Versioned run-directory files (launcher/core/rundir/schema.py): job.json, run_state.json and
failure.json carry "schema"; a file without it is schema 1 and still read (`packrun status` of
a run made by an older packrun), a newer schema is refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.core.errors import UserError
from launcher.core.rundir import attempts, failure
from launcher.core.rundir.job_json import spec_from_json, spec_to_json
from launcher.core.rundir.names import (
    FAILURE_JSON,
    JOB_JSON,
    LOGS,
    RUN_DIR_SCHEMA,
    RUN_STATE,
    attempt_logs,
)
from launcher.core.rundir.state import Phase, read_run_state
from launcher.core.spec import build_spec
from launcher.runs.listing import scan
from tests.helpers import packrun_in_process, shown

pytestmark = pytest.mark.unit

NEWER = RUN_DIR_SCHEMA + 1


def spec(tmp_path: Path):
    return build_spec({"name": "old", "train_dir": str(tmp_path / "data"),
                       "val_dir": str(tmp_path / "data"),
                       "output_dir": str(tmp_path / "runs"), "epochs": 3}, check_paths=False)


def schema_1_run(tmp_path: Path) -> Path:
    """A run directory as packrun wrote it before the schema field: job.json {"format": 1},
    run_state.json and failure.json without "schema"; the run failed in its first attempt."""
    d = tmp_path / "old-run"
    (d / LOGS).mkdir(parents=True)
    (d / JOB_JSON).write_text(json.dumps({"format": 1, "spec": spec(tmp_path).to_dict()}))
    (d / RUN_STATE).write_text(json.dumps({
        "kind": "run", "world": 1, "attempt": 1, "max_restarts": 0, "state": "failed",
        "started": 1000.0, "attempt_started": 1000.0, "ended": 1065.0, "host": "elsewhere",
        "pid": 1, "updated": 1065.0, "exit_code": 1}))
    record = {"attempt": 1, "max_attempts": 1, "rank": 0, "host": "node1", "exit_code": 1,
              "signal": None, "signal_name": None, "epoch": 2, "step": 4,
              "first_error": "ValueError: boom", "reason": "rank 0 exited with status 1",
              "log": "", "action": "gave up", "time": "2026-01-01T00:00:00+0000"}
    (d / attempt_logs(1)).mkdir(parents=True)
    for where in (d / attempt_logs(1) / FAILURE_JSON, d / FAILURE_JSON):
        where.write_text(json.dumps(record))
    (d / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.5}\n')
    return d


def test_files_are_written_with_the_schema(tmp_path):
    s = spec(tmp_path)
    doc = json.loads(spec_to_json(s))
    assert doc["schema"] == RUN_DIR_SCHEMA and "format" not in doc
    (tmp_path / JOB_JSON).write_text(spec_to_json(s))
    assert spec_from_json(tmp_path) == s
    (tmp_path / LOGS).mkdir()
    attempts.begin(tmp_path, "run", 1, 0)
    assert json.loads((tmp_path / RUN_STATE).read_text())["schema"] == RUN_DIR_SCHEMA
    record = failure.failure_record(tmp_path, attempt=1, max_attempts=1, rank=None, host="h",
                                    exit_code=1, signal=None, reason="r", action=failure.GAVE_UP)
    failure.write_failure(tmp_path, record)
    assert json.loads((tmp_path / FAILURE_JSON).read_text())["schema"] == RUN_DIR_SCHEMA


def test_a_schema_1_run_directory_is_still_read(tmp_path):
    d = schema_1_run(tmp_path)
    assert spec_from_json(d).name == "old"
    rs = read_run_state(d)
    assert rs is not None
    assert (rs.state, rs.launch, rs.attempt, rs.epoch, rs.duration_s) == \
        (Phase.FAILED, "run", 1, 1, 65.0)
    assert rs.failure.startswith("attempt 1 failed: rank 0 on node1 exited with status 1")
    r = packrun_in_process("status", d)
    assert r.returncode == 0, shown(r)
    assert r.stdout.splitlines()[0] == "old: failed (run, 1 worker(s)), attempt 1, 0:01:05"
    assert "first error: ValueError: boom" in r.stdout


def test_a_schema_1_job_json_of_another_format_is_refused(tmp_path):
    (tmp_path / JOB_JSON).write_text(json.dumps({"format": 7, "spec": {}}))
    with pytest.raises(UserError, match="format 7"):
        spec_from_json(tmp_path)


@pytest.mark.parametrize("newer", [JOB_JSON, RUN_STATE, FAILURE_JSON])
def test_a_newer_schema_is_one_error_line(tmp_path, newer):
    d = schema_1_run(tmp_path)
    path = d / newer
    path.write_text(json.dumps(json.loads(path.read_text()) | {"schema": NEWER}))
    with pytest.raises(UserError, match=rf"^{d} was written by a newer packrun \(schema {NEWER}\)"):
        read_run_state(d)
    r = packrun_in_process("status", d)
    assert r.returncode == 2, shown(r)
    assert r.stderr == (f"packrun: error: {d} was written by a newer packrun (schema {NEWER}); "
                        f"this packrun reads schemas up to {RUN_DIR_SCHEMA}: use that packrun "
                        "or a newer one\n")
    if newer == JOB_JSON:
        with pytest.raises(UserError, match="newer packrun"):
            spec_from_json(d)


def test_ls_lists_a_newer_run_directory_without_reading_it(tmp_path):
    d = schema_1_run(tmp_path)
    (d / JOB_JSON).write_text(json.dumps({"schema": NEWER, "spec": {"nodes": 1}}))
    (st,) = scan(tmp_path)
    assert (st.state, st.detail) == (Phase.CORRUPT, f"written by a newer packrun (schema {NEWER})")


def test_a_schema_that_is_no_number_is_an_error(tmp_path):
    (tmp_path / JOB_JSON).write_text(json.dumps({"schema": "2", "spec": {}}))
    with pytest.raises(UserError, match="is not a schema number"):
        spec_from_json(tmp_path)
