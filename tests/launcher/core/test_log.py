"""The launcher's console (launcher/core/log.py): messages go through `logging` as the lines packrun
always printed; results stay on stdout whatever the level; `--quiet` and `--verbose` work on
every command and reach the packrun processes a command starts."""

from __future__ import annotations

import io
import logging
import os
import re
import sys

import pytest

from launcher.core import log as console_log
from launcher.core.log import STDERR, STDOUT, console, get_logger, set_level, take_level_flags
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.rundir.names import SLURM_JOB_ID
from launcher.core.spec import load_job
from tests.helpers import packrun_in_process

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def normal_level(monkeypatch):
    monkeypatch.delenv(console_log.LEVEL_ENV, raising=False)
    yield
    set_level("normal")
    os.environ.pop(console_log.LEVEL_ENV, None)


@pytest.mark.parametrize("argv, level, rest", [
    (["render", "j.toml"], logging.INFO, ["render", "j.toml"]),
    (["--quiet", "render", "j.toml"], logging.WARNING, ["render", "j.toml"]),
    (["render", "j.toml", "-q"], logging.WARNING, ["render", "j.toml"]),
    (["debug", "--verbose", "j.toml", "--epochs=2"], logging.DEBUG,
     ["debug", "j.toml", "--epochs=2"]),
    (["-q", "keys", "-v"], logging.DEBUG, ["keys"]),                  # the last one wins
    (["keys", "--", "--verbose"], logging.INFO, ["keys", "--", "--verbose"]),  # fire's own flag
])
def test_level_flags_are_taken_anywhere_before_a_double_dash(argv, level, rest):
    assert take_level_flags(argv) == rest
    assert logging.getLogger("launcher").level == level


def test_lines_go_where_packrun_always_printed_them(capsys):
    log = get_logger("launcher.test")
    log.info("packrun: run directory /r")
    log.info("packrun: rendered /r", extra=STDERR)
    log.warning("packrun: warning: w")
    log.error("packrun: job 9 FAILED", extra=STDOUT)
    log.error("packrun: error: e")
    log.debug("hidden at the normal level")
    out, err = capsys.readouterr()
    assert out == "packrun: run directory /r\npackrun: job 9 FAILED\n"
    assert err == "packrun: rendered /r\npackrun: warning: w\npackrun: error: e\n"


def test_quiet_keeps_warnings_and_errors_and_verbose_adds_debug_lines(capsys):
    log = get_logger("launcher.test")
    set_level("quiet")
    log.info("packrun: progress")
    log.warning("packrun: warning: w")
    assert capsys.readouterr() == ("", "packrun: warning: w\n")
    assert console() is not sys.stdout          # the workers' output is not copied either
    console().write("a worker's line\n")
    assert capsys.readouterr() == ("", "")
    set_level("verbose")
    log.debug("running sbatch job.sbatch")
    assert capsys.readouterr().err == "packrun: debug: running sbatch job.sbatch\n"
    assert console() is sys.stdout


def test_the_level_reaches_the_packrun_processes_a_command_starts():
    set_level("quiet")
    assert os.environ[console_log.LEVEL_ENV] == "quiet"   # a sweep's points, the demo's export
    assert take_level_flags(["keys"]) == ["keys"]          # no flag: the inherited level stays
    assert logging.getLogger("launcher").level == logging.WARNING


def test_lines_reach_a_redirected_stdout():
    log = get_logger("launcher.test")
    buf, old = io.StringIO(), sys.stdout
    sys.stdout = buf
    try:
        log.info("packrun: to the new stdout")
    finally:
        sys.stdout = old
    assert buf.getvalue() == "packrun: to the new stdout\n"


# --- through the real CLI (its entry, in this process: tests/helpers.packrun_in_process) ---------

def test_render_quiet_and_verbose(make_job, tmp_path):
    job = make_job()
    normal = packrun_in_process("render", job, f"--out={tmp_path / 'a'}")
    assert normal.returncode == 0, normal.stderr
    assert normal.stderr.startswith(f"packrun: rendered {tmp_path / 'a'}")
    quiet = packrun_in_process("--quiet", "render", job, f"--out={tmp_path / 'b'}")
    assert quiet.returncode == 0 and quiet.stderr == ""

    def same(text):  # run directories differ in their time stamp
        return re.sub(r"-\d{8}-\d{6}(-\d+)?", "-T", text).replace(str(tmp_path / "b"),
                                                                str(tmp_path / "a"))
    assert same(quiet.stdout) == same(normal.stdout)  # the result, as without --quiet
    verbose = packrun_in_process("render", job, f"--out={tmp_path / 'c'}", "--verbose")
    assert verbose.returncode == 0 and verbose.stderr.startswith("packrun: rendered ")


def test_quiet_still_shows_errors(tmp_path):
    r = packrun_in_process("--quiet", "check", tmp_path / "nope.toml")
    assert r.returncode == 2
    assert r.stderr.startswith(f"packrun: error: job file {tmp_path / 'nope.toml'}")
    assert len(r.stderr.splitlines()) == 1 and r.stdout == ""


def test_help_names_the_level_flags():
    for args in (["--help"], ["render", "--help"]):
        r = packrun_in_process(*args)
        assert r.returncode == 0 and "--quiet / -q" in r.stdout and "--verbose / -v" in r.stdout


def test_verbose_shows_every_slurm_command(make_job, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "job.json").write_text(spec_to_json(load_job(make_job())))
    (run_dir / SLURM_JOB_ID).write_text("12\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'JobId=12 JobState=RUNNING Restarts=0 "
                                      "RunTime=00:01:00 NodeList=vm Reason=None ExitCode=0:0'\n")
    (bin_dir / "scontrol").chmod(0o755)
    (bin_dir / "sacct").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sacct").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env["PATH"] = f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin"
    r = packrun_in_process("status", run_dir, "--verbose", env=env)
    quiet = packrun_in_process("status", run_dir, "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^packrun: debug: running scontrol .*\b12\b", r.stderr, re.M), r.stderr
    assert "RUNNING" in r.stdout
    assert quiet.stderr == "" and quiet.stdout == r.stdout   # a result is not a log line


@pytest.mark.parametrize("level, state, shown", [
    ("normal", "COMPLETED", ["Epoch 1/1", "packrun: job 9 COMPLETED, exit code 0"]),
    ("quiet", "COMPLETED", []),
    ("quiet", "FAILED", ["packrun: job 9 FAILED, exit code 1", "packrun: logs:"]),
])
def test_following_a_slurm_job_obeys_quiet(tmp_path, monkeypatch, capsys, level, state, shown):
    from launcher.slurm import client as slurm
    from launcher.slurm.client import JobInfo
    (tmp_path / SLURM_JOB_ID).write_text("9\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "worker_0.log").write_text("Epoch 1/1\n")
    code = 0 if state == "COMPLETED" else 1
    monkeypatch.setattr(slurm, "job_info",
                        lambda job_id: JobInfo(job_id, state, code, 0, 0, "", "", ""))
    set_level(level)
    assert slurm.follow(tmp_path, poll_s=0) == code
    out, err = capsys.readouterr()
    assert err == ""                       # on stdout, as packrun always printed them
    assert [line for line in shown if line not in out] == []
    if not shown:
        assert out == ""


@pytest.mark.parametrize("level, copied", [("normal", True), ("quiet", False)])
def test_debug_copies_the_workers_output_unless_quiet(tmp_path, monkeypatch, capsys, level,
                                                      copied):
    from launcher.supervise import debug as local_run
    worker = tmp_path / "worker.py"
    worker.write_text("print('Epoch 1/1 from the worker')\n")
    monkeypatch.setattr(local_run, "WORKER_SCRIPT", worker)
    (tmp_path / "logs").mkdir()
    set_level(level)
    assert local_run._worker_once(tmp_path, 1).code == 0
    assert ("Epoch 1/1 from the worker" in capsys.readouterr().out) == copied
    assert "Epoch 1/1 from the worker" in (tmp_path / "logs" / "worker_0.log").read_text()
