"""The shared test helpers (tests/helpers.py) that decide whether a test runs: need_tool() skips
a test here and fails it in CI, naming the Debian package, and every package it names is one
.ci/run installs; digests() reads the ranks' closing lines and checks each names its rank;
shared_run() trains a reference run once however many threads or processes ask."""

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import (
    APT_PACKAGES,
    REPO,
    digests,
    need_tool,
    packrun,
    packrun_in_process,
    shared_run,
    stub_tools_path,
    unavailable,
)

pytestmark = pytest.mark.unit

# Debian's Essential packages are on every system; .ci/run need not install them.
ESSENTIAL = {"libc-bin"}


def ci_packages() -> set[str]:
    """The packages .ci/run apt-installs (its apt_pkgs array)."""
    m = re.search(r"^apt_pkgs=\(([^)]*)\)", (REPO / ".ci" / "run").read_text(), re.M)
    assert m, ".ci/run lost its apt_pkgs=(...) line"
    return set(m.group(1).split())


def test_every_package_need_tool_names_is_one_ci_installs():
    assert set(APT_PACKAGES.values()) - ESSENTIAL - ci_packages() == set()


def test_need_tool_gives_the_path_of_a_tool_that_is_there(tmp_path):
    tool = tmp_path / "shellcheck"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert need_tool("shellcheck", "to lint", {"PATH": str(tmp_path)}) == str(tool)
    assert need_tool("shellcheck", "to lint", {"PATH": str(tmp_path), "CI": "true"}) == str(tool)


def test_need_tool_skips_without_the_tool_and_fails_in_ci(tmp_path):
    said = r"mpirun is not installed \(apt-get install -y openmpi-bin\), needed to launch"
    with pytest.raises(pytest.skip.Exception, match=said):
        need_tool("mpirun", "to launch", {"PATH": str(tmp_path)})
    with pytest.raises(pytest.skip.Exception, match=said):
        need_tool("mpirun", "to launch", {"PATH": str(tmp_path), "CI": "false"})
    with pytest.raises(pytest.fail.Exception, match=said + r".*CI=true: \.ci/run must provide"):
        need_tool("mpirun", "to launch", {"PATH": str(tmp_path), "CI": "true"})


def test_a_tool_without_a_package_is_a_mistake_in_the_test(tmp_path):
    with pytest.raises(KeyError, match="nosuchtool"):
        need_tool("nosuchtool", "for nothing", {"PATH": str(tmp_path)})


def test_unavailable_skips_here_and_fails_in_ci():
    with pytest.raises(pytest.skip.Exception, match=r"^no cluster$"):
        unavailable("no cluster", {})
    with pytest.raises(pytest.fail.Exception, match=r"^no cluster; CI=true"):
        unavailable("no cluster", {"CI": "true"})


def _worker_logs(tmp_path, *texts):
    (tmp_path / "logs").mkdir(parents=True)
    for rank, text in enumerate(texts):
        (tmp_path / "logs" / f"worker_{rank}.log").write_text(text)
    return tmp_path


def test_stub_tools_run_under_this_interpreter_whatever_python3_the_path_finds_first(tmp_path):
    """A stub (`#!/usr/bin/env python3`) on stub_tools_path runs this interpreter, ahead of a
    `python3` earlier on the given PATH (a pyenv shim), and the stubs come first."""
    stubs, shim = tmp_path / "stubs", tmp_path / "shim"
    stubs.mkdir()
    shim.mkdir()
    (shim / "python3").write_text("#!/bin/sh\necho shim\n")
    (shim / "python3").chmod(0o755)
    (stubs / "tool").write_text("#!/usr/bin/env python3\nimport sys\nprint(sys.executable)\n")
    (stubs / "tool").chmod(0o755)
    path = stub_tools_path(stubs, f"{shim}:/usr/bin:/bin")
    assert path.startswith(f"{stubs}:")
    r = subprocess.run(["tool"], env={"PATH": path}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == Path(sys.executable).resolve()


@pytest.mark.parametrize("args", [["--help"], ["debug", "{t}/missing.toml"],
                                  ["--verbose", "check", "{t}/missing.toml"],
                                  ["render", "{t}/job.toml", "--epochs=two"], ["sumbit"]])
def test_the_cli_in_process_says_what_the_command_says_and_leaves_this_process_as_it_was(
        tmp_path, args):
    """Exit status, stdout and stderr as the real command gives them; os.environ (--verbose
    sets the level for the processes a command starts), cwd and sys.argv put back."""
    (tmp_path / "job.toml").write_text('name = "x"\n')
    argv = [a.format(t=tmp_path) for a in args]
    before = (dict(os.environ), os.getcwd(), list(sys.argv))
    here = packrun_in_process(*argv, cwd=tmp_path, env_extra={"COLUMNS": "100"})
    assert (dict(os.environ), os.getcwd(), list(sys.argv)) == before
    real = packrun(*argv, cwd=tmp_path, env_extra={"COLUMNS": "100"}, timeout=120)
    assert (here.returncode, here.stdout, here.stderr) == \
        (real.returncode, real.stdout, real.stderr)


def test_the_cli_in_process_reads_the_console_level_from_its_environment(make_job, tmp_path):
    """As a new process does: the level one call set is not the next one's; the environment's
    is read."""
    from launcher.core.log import LEVEL_ENV
    job = make_job()
    quiet = packrun_in_process("--quiet", "render", job, f"--out={tmp_path}/q")
    normal = packrun_in_process("render", job, f"--out={tmp_path}/n")
    from_env = packrun_in_process("render", job, f"--out={tmp_path}/e",
                                  env_extra={LEVEL_ENV: "quiet"})
    assert quiet.returncode == normal.returncode == from_env.returncode == 0
    assert "packrun: rendered " in normal.stderr
    assert "packrun: rendered " not in quiet.stderr + from_env.stderr


def test_the_cli_in_process_leaves_this_process_alive_after_mindspore_was_imported(
        monkeypatch, tmp_path):
    """The entry point skips the interpreter's teardown (os._exit) once MindSpore is imported,
    as it is in a test process that ran a model test: the helper must not take that exit."""
    import types
    monkeypatch.setitem(sys.modules, "mindspore", sys.modules.get("mindspore")
                        or types.ModuleType("mindspore"))
    r = packrun_in_process("debug", tmp_path / "missing.toml")
    assert r.returncode == 2 and "job file" in r.stderr


def test_digests_are_read_per_rank_and_must_name_their_rank(tmp_path):
    line = "rank {}: final weights sha256 {}, batchnorm statistics sha256 {}\n"
    run = _worker_logs(tmp_path / "a", "Epoch 1/1\n" + line.format(0, "aa11", "bb22"),
                       line.format(1, "aa11", "bb22") + line.format(1, "ffff", "ffff"))
    assert digests(run) == {0: ("aa11", "bb22"), 1: ("aa11", "bb22")}   # the first line counts
    assert digests(run, 1) == {0: ("aa11", "bb22")}
    swapped = _worker_logs(tmp_path / "b", line.format(1, "aa", "bb"), line.format(0, "aa", "bb"))
    with pytest.raises(AssertionError, match=r"worker_0\.log states the digest of rank 1"):
        digests(swapped)
    none = _worker_logs(tmp_path / "c", "Epoch 1/1\n", line.format(1, "aa", "bb"))
    with pytest.raises(AssertionError, match=r"worker_0\.log has no final digest"):
        digests(none)


def test_a_shared_run_is_trained_once_for_every_asker_and_its_failure_fails_them_all(tmp_path):
    started = []

    def fake_packrun(mode, job, *flags, env_extra=None):
        started.append((mode, job.name, flags, env_extra))
        time.sleep(0.3)   # long enough for the other askers to wait on the lock
        run_dir = job.parent / "runs" / f"{mode}-1"
        code = 1 if "--fail" in flags else 0
        return subprocess.CompletedProcess([], code, f"packrun: run directory {run_dir}\n", "")

    got: list = []

    def ask(**keys):
        got.append(shared_run(tmp_path, tmp_path / "data", "debug", "--x=1", run=fake_packrun,
                              env_extra={"A": "1"}, **keys))

    askers = [threading.Thread(target=ask, kwargs=dict(epochs=4)) for _ in range(3)]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    assert len(started) == 1 and len(got) == 3 and len(set(got)) == 1, (started, got)
    assert started[0] == ("debug", "reference.toml", ("--x=1",), {"A": "1"})
    assert got[0].name == "debug-1" and (got[0].parent.parent / "reference.toml").is_file()
    ask(epochs=3)                                        # other keys: another run
    assert len(started) == 2 and got[-1] != got[0]
    for _ in range(2):
        with pytest.raises(AssertionError, match=r"the reference run .*--fail.* failed:\nexit 1"):
            shared_run(tmp_path, tmp_path / "data", "run", "--fail", run=fake_packrun)
    assert len(started) == 3                             # the failure was not run again
