"""The supervisor of one server's ranks (`supervise_ranks`, launcher/supervise/supervisor.py),
which rank_table.sh hands its ranks to through `python -m launcher.node supervise-ranks`: each
rank's command runs in ranks/<rank>/ with its log; the first that fails is named with its log and
stops the others; ranks that stop on request (75) let the others finish."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from launcher.core.rundir.names import worker_log
from launcher.supervise.supervisor import supervise_ranks
from tests.helpers import REPO

pytestmark = pytest.mark.unit


def rank(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_every_rank_runs_in_its_directory_with_its_log(tmp_path):
    out = supervise_ranks(tmp_path, [(r, rank("import os; print(os.getcwd())")) for r in (4, 5)])
    assert out.code == 0 and out.failed_rank is None
    for r in (4, 5):
        assert (tmp_path / worker_log(r)).read_text() == f"{tmp_path / 'ranks' / str(r)}\n"


def test_the_first_failing_rank_stops_the_others_and_is_named(tmp_path):
    err = io.StringIO()
    started = time.monotonic()
    out = supervise_ranks(tmp_path, [(0, rank("import time; time.sleep(60)")),
                                     (1, rank("import os, signal; os.kill(os.getpid(), 9)"))],
                          grace_s=2, stderr=err)
    assert time.monotonic() - started < 20
    assert (out.code, out.failed_rank, out.signal) == (128 + 9, 1, 9)
    assert err.getvalue() == (f"packrun: rank 1 was killed by signal 9 (SIGKILL); log: "
                              f"{tmp_path / worker_log(1)}; stopping the other ranks of this "
                              "node\n")


def test_a_rank_that_stops_on_request_lets_the_others_finish(tmp_path):
    out = supervise_ranks(tmp_path, [(0, rank("raise SystemExit(75)")),
                                     (1, rank("import time; time.sleep(1); print('done')"))])
    assert out.code == 75 and out.failed_rank is None
    assert (tmp_path / worker_log(1)).read_text() == "done\n"


def test_the_node_verb_passes_the_exit_status(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    verb = [sys.executable, "-m", "launcher.node", "supervise-ranks"]
    r = subprocess.run([*verb, str(tmp_path), "0",
                        "--rank", "0", sys.executable, "-c", "pass",
                        "--rank", "1", sys.executable, "-c", "raise SystemExit(3)"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "packrun: rank 1 exited with status 3; log: " in r.stderr
    ok = subprocess.run([*verb, str(tmp_path), "1",
                         "--rank", "2", sys.executable, "-c", "pass"],
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout == "packrun: all 1 rank(s) of server 1 finished\n"
