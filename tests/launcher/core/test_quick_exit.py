"""launcher/core/quick_exit.py: leaving without the interpreter's teardown keeps what a normal
exit gives the supervisor and the user: the exit handlers' work, buffered output, the status."""

import subprocess
import sys

import pytest

from launcher.core.paths import REPO
from launcher.core.quick_exit import exit_status

pytestmark = pytest.mark.unit


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("status", [0, 3])
def test_leave_runs_the_exit_handlers_flushes_and_exits_with_the_status(tmp_path, status):
    marker = tmp_path / "handler_ran"
    r = run_python("import atexit, sys\n"
                   "from pathlib import Path\n"
                   "from launcher.core.quick_exit import leave\n"
                   f"atexit.register(lambda: Path({str(marker)!r}).write_text('yes'))\n"
                   "sys.stdout.write('buffered, no newline')\n"
                   "sys.stderr.write('to stderr')\n"
                   f"leave({status})\n"
                   "print('not reached')\n")
    assert r.returncode == status
    assert r.stdout == "buffered, no newline"
    assert r.stderr == "to stderr"
    assert marker.read_text() == "yes"


def test_exit_status_is_what_sys_exit_would_give(capsys):
    assert [exit_status(None), exit_status(0), exit_status(2)] == [0, 0, 2]
    assert exit_status("packrun: stopped") == 1
    assert capsys.readouterr().err == "packrun: stopped\n"


@pytest.mark.parametrize("argv, status, says", [
    (["--help"], 0, "commands"), (["no-such-command"], 2, "unknown command")])
def test_the_cli_keeps_its_status_when_mindspore_was_imported(argv, status, says):
    # export, predict and the demo import MindSpore in the CLI's process; its exit then skips
    # the teardown (a stand-in module here: the path taken depends only on the name)
    r = run_python("import sys, types\n"
                   "sys.modules['mindspore'] = types.ModuleType('mindspore')\n"
                   f"sys.argv = ['packrun', *{argv!r}]\n"
                   "from launcher.cli.main import main\n"
                   "main()\n")
    assert r.returncode == status, r.stderr
    assert says in (r.stdout + r.stderr).lower()
