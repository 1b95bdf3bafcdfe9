"""`packrun board` (launcher/runs/board.py): where TensorBoard listens and how to reach it, and
the one-line refusals. (Serving a real sweep's scalars and HParams over HTTP:
tests/launcher/sweep/test_sweep.py, on the sweep it runs anyway.)"""

import subprocess
import sys

import pytest

from launcher.runs import board
from tests.helpers import packrun, packrun_env, shown

pytestmark = pytest.mark.unit


def test_the_url_and_from_an_ssh_session_the_tunnel_for_a_laptop():
    here = board.access_lines("127.0.0.1", 41235, {}, "login01.cluster", "ana")
    assert here == ["TensorBoard at http://127.0.0.1:41235/ (bound to 127.0.0.1; Ctrl-C stops it)"]
    remote = board.access_lines("127.0.0.1", 41235, {"SSH_CONNECTION": "10.1.1.5 5122 10.1.1.1 22"},
                                "login01.cluster", "ana")
    assert remote[1] == ("from your laptop: ssh -N -L 41235:127.0.0.1:41235 ana@login01.cluster "
                         "then open http://localhost:41235/")
    every = board.access_lines("0.0.0.0", 6006, {"SSH_CLIENT": "x"}, "n1", "ana")
    assert every[0].startswith("TensorBoard at http://0.0.0.0:6006/ (bound to 0.0.0.0")
    assert "-L 6006:127.0.0.1:6006 ana@n1" in every[1]


def test_the_port_is_free_and_the_command_is_tensorboards_own():
    port = board.free_port("127.0.0.1")
    assert 0 < port < 65536
    argv = board.tensorboard_argv(board.Path("/r"), "127.0.0.1", port)
    assert argv[:3] == [sys.executable, "-m", "tensorboard.main"]
    assert argv[3:] == ["--logdir", "/r", "--host", "127.0.0.1", "--port", str(port)]


def test_a_missing_directory_is_one_line_and_exit_2(tmp_path):
    r = packrun("board", tmp_path / "nope", cwd=tmp_path, timeout=60)
    assert r.returncode == 2, shown(r)
    assert r.stderr.strip().splitlines() == [
        (f"packrun: error: {tmp_path / 'nope'} is not a directory; pass a run, sweep or runs "
        "directory (default: runs, where packrun writes them)")]
    r = packrun("board", cwd=tmp_path, timeout=60)   # the default: runs, here none
    assert r.returncode == 2 and "runs is not a directory" in r.stderr, shown(r)


def test_without_tensorboard_it_says_how_to_install_it(tmp_path):
    """The viewer is optional: a Python without it (find_spec finds nothing) gets one line."""
    code = ("import importlib.util, sys; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n == 'tensorboard' else real(n, *a); "
            "from launcher.cli.main import main; sys.argv = ['packrun', 'board', sys.argv[1]]; "
            "main()")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=packrun_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, shown(r)
    assert r.stderr.strip().splitlines() == [
        ("packrun: error: TensorBoard is not installed (an optional viewer): pip install "
        "tensorboard (or install packrun with its [board] extra)")]
    assert r.stdout == ""
