"""Ctrl-C exits 130 from every entry point: the packrun commands (also while the preflight
decodes images, which used to turn it into bad input, exit 2, never retried), the node entry
point's verbs, the Slurm batch program (which ends by SIGINT itself, as the batch shell would:
130 to its shell) and the worker."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from launcher.core.errors import EXIT_INTERRUPTED
from launcher.core.spec import load_job
from launcher.render.artifacts import write_run_dir
from tests.helpers import (
    REPO,
    as_at_a_terminal,
    packrun_argv,
    packrun_env,
    shown,
    small_job,
    wait_for,
)

pytestmark = pytest.mark.unit

# Loaded by every Python started with <hook> first on PYTHONPATH: with BLOCK_DECODE set, the
# first image the preflight opens blocks (after creating the file BLOCK_DECODE names), so the
# Ctrl-C lands inside the image scan every time.
HOOK = """
import os
if os.environ.get("BLOCK_DECODE"):
    import time
    import PIL.Image
    def _blocked(*args, **kwargs):
        open(os.environ["BLOCK_DECODE"], "w").close()
        time.sleep(600)
    PIL.Image.open = _blocked
"""


def interrupt_while_scanning(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    blocked = tmp_path / "blocked"
    env = packrun_env()
    env["PYTHONPATH"] = f"{hook}{os.pathsep}{env['PYTHONPATH']}"
    env["BLOCK_DECODE"] = str(blocked)
    proc = subprocess.Popen(as_at_a_terminal(packrun_argv(*args)), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(blocked.exists, 120, "the image scan")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("command", ["check", "debug", "run", "submit"])
def test_ctrl_c_during_the_image_scan_exits_130(tmp_path, data, command):
    job = small_job(tmp_path, data, image_check="all")
    r = interrupt_while_scanning(tmp_path, [command, job])
    assert r.returncode == EXIT_INTERRUPTED, shown(r)
    assert "interrupted (Ctrl-C) while checking the data; nothing was started" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_ctrl_c_of_a_node_verb_and_of_the_batch_program(tmp_path, make_job):
    spec = load_job(make_job(nodes=1, master_addr="127.0.0.1", master_port=8118),
                    check_paths=False)
    rd, _ = write_run_dir(spec, slurm=True, out=str(tmp_path / "runs"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/bash\necho step-started\nsleep 600\n")
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    env = packrun_env() | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "9",
                           "SLURM_JOB_NODELIST": "localhost"}
    batch = subprocess.Popen(as_at_a_terminal(["bash", str(rd / "job.sbatch")]), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "step-started" in batch.stdout.readline() + batch.stdout.readline()
    batch.send_signal(signal.SIGINT)
    batch.wait(timeout=60)
    assert batch.returncode == -signal.SIGINT, batch.stderr.read()  # 130 to its shell
    # a verb that blocks: supervise-ranks with one rank that sleeps
    proc = subprocess.Popen(as_at_a_terminal(
        [*packrun_argv()[:2], "launcher.node", "supervise-ranks", str(rd), "0", "--rank", "0",
         "sleep", "600"]), cwd=REPO, env=packrun_env(), stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (rd / "logs" / "worker_0.log").exists(), 60, "the rank")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr.read()


def test_ctrl_c_in_the_worker_leaves_130_in_its_exit_file(tmp_path, monkeypatch):
    import src.train as train
    (tmp_path / "logs").mkdir()
    monkeypatch.setenv("RANK_ID", "0")

    def interrupted(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "run", interrupted)
    assert train.main(["train.py", str(tmp_path)]) == EXIT_INTERRUPTED
    assert (tmp_path / "logs" / "worker_0.exit").read_text().strip() == "130"
