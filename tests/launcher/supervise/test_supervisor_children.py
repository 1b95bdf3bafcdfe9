"""A rank's short-lived children are not ranks. Between fork and exec (the worker runs
`g++ --version` when it loads the native kernels; the launch shim's `$(...)` and `mkdir` fork
too), a child shows its parent's command line and environment, rank included. CI once judged
such a child, gone a moment later without an exit file, as "rank 1 was killed" and failed a
healthy two-worker run."""

from __future__ import annotations

import os
import subprocess
import sys
from shlex import quote as _q

import psutil
import pytest

from launcher.core.rundir.names import worker_exit
from launcher.supervise.supervisor import Supervisor
from tests.helpers import wait_for

pytestmark = pytest.mark.unit

WORKER = "/nonexistent/src/train.py"   # only the supervisor's marker: never executed

# Each stub is one rank (RANK_ID in its environment, the worker script and run directory among
# its arguments): a child with the same command line lives ~0.5 s (ten of the supervisor's
# polls), then the rank itself finishes at ~1 s and writes exit status 0.
PY_FORK = """
import os, sys, time
if os.fork() == 0:
    time.sleep(0.5)
    os._exit(0)
time.sleep(1.0)
open(os.path.join(sys.argv[2], {exit!r}), "w").write("0\\n")
"""
SH_SUBSHELL = 'x=$(sleep 0.5; echo done); sleep 0.5; echo 0 > "$1/{exit}"'


def _launch(tmp_path, stub: str) -> list[str]:
    (tmp_path / "logs").mkdir()
    script = tmp_path / "launch.sh"
    run_dir = str(tmp_path)
    if stub == "python fork":
        code = PY_FORK.format(exit=worker_exit(0))
        cmd = f"exec {sys.executable} -c {_q(code)} {_q(WORKER)} {_q(run_dir)}"
    else:
        cmd = f"exec sh -c {_q(SH_SUBSHELL.format(exit=worker_exit(0)))} {_q(WORKER)} {_q(run_dir)}"
    script.write_text(f"#!/bin/bash\nexport MS_ROLE=MS_WORKER RANK_ID=0\n{cmd}\n")
    return ["bash", str(script)]


@pytest.mark.parametrize("stub", ["python fork", "shell subshell"])
def test_a_child_of_a_rank_ending_is_not_that_rank_failing(tmp_path, stub):
    sup = Supervisor(tmp_path, _launch(tmp_path, stub), WORKER, dict(os.environ), world=1)
    outcome = sup.run()
    assert (outcome.code, outcome.reason) == (0, "")
    assert len(sup.workers) == 1                   # the rank, not its child
    assert sup.others, "the child was never seen: the test did not exercise the race"


def test_a_launcher_lingering_after_every_rank_finished_is_ended(tmp_path):
    """msrun looks at its workers once a second and then tears its MindSpore down: once every
    rank has left exit status 0 and is gone, the supervisor ends the launch instead of waiting
    for that, and the run is complete."""
    (tmp_path / "logs").mkdir()
    late = tmp_path / "late"
    ranks = " ".join(f"RANK_ID={r} sh -c {_q(f'sleep 0.3; echo 0 > $1/{worker_exit(r)}')} "
                     f"{_q(WORKER)} {_q(str(tmp_path))} &" for r in (0, 1))
    script = tmp_path / "launch.sh"
    script.write_text(f"#!/bin/bash\nexport MS_ROLE=MS_WORKER\n{ranks}\nwait\n"
                      f"sleep 30\necho late > {_q(str(late))}\n")
    sup = Supervisor(tmp_path, ["bash", str(script)], WORKER, dict(os.environ), world=2)
    outcome = sup.run()
    assert (outcome.code, outcome.reason, outcome.workers_seen) == (0, "", [0, 1])
    assert not late.exists()                       # ended, not waited for
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(script) in (p.info["cmdline"] or [])]


def test_a_child_gone_between_the_supervisors_reads_is_not_a_rank(tmp_path, monkeypatch):
    """The same race one step later: the child is listed and its environment read while it
    runs (the `lscpu` MindSpore runs at each rank's start), then reaped before the supervisor
    looks up its parent. That is how a CI run recorded "rank 0 was killed", no signal, for a
    healthy run and restarted it. The child here is real: listed and read while alive, then
    reaped, as the supervisor would have met it."""
    child = subprocess.Popen(["sh", "-c", "read line", WORKER, str(tmp_path)],
                             stdin=subprocess.PIPE,
                             env={**os.environ, "MS_ROLE": "MS_WORKER", "RANK_ID": "0"})
    proc = psutil.Process(child.pid)
    # Popen returns once exec has begun; the new command line shows a moment later
    proc.info = {"pid": child.pid, "cmdline": wait_for(
        lambda: proc.cmdline()[-2:] == [WORKER, str(tmp_path)] and proc.cmdline(), 10,
        "the child's command line", every=0.01)}
    env = proc.environ()
    monkeypatch.setattr(psutil, "process_iter", lambda *args, **kwargs: iter([proc]))

    alive = Supervisor(tmp_path, ["true"], WORKER, dict(os.environ), world=1)
    alive._discover()   # the control: alive, and its parent (pytest) no rank, it is a rank
    assert [w.rank for w in alive.workers.values()] == [0]

    child.communicate(b"\n")    # ends and is reaped
    proc.environ = lambda: env  # ...after the supervisor read its environment
    sup = Supervisor(tmp_path, ["true"], WORKER, dict(os.environ), world=1)
    sup._discover()
    assert sup.workers == {}
    assert sup._check_workers() is None
