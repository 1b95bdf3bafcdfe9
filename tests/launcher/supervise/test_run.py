"""Data-parallel runs for real on CPU: 2 workers through msrun and mpirun, sharding, identical
weights, rank-0 and sharded evaluation, and teardown on failure, kill and SIGTERM."""

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from src.data.dataset import shard_indices
from tests.helpers import (
    REPO,
    digests,
    need_tool,
    packrun,
    packrun_argv,
    packrun_env,
    processes_of,
    run_dir_of,
    write_tiny_job,
)

# The 2-worker runs of `job` that compile the same graphs (the launcher and eval_mode "sharded"
# versus "auto" are not in the compile cache's key), one after the other on one pytest-xdist
# worker: the first compiles, the others reuse (side by side, each would compile).
SHARES_GRAPHS = pytest.mark.xdist_group("dp_job_graphs")


@pytest.fixture(scope="module")
def job(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("dp")
    return write_tiny_job(d / "dp.toml", digits_2class, epochs=2, lr=0.02,
                          num_parallel_workers=1)


def single_process_accuracy(run_dir: Path) -> float:
    import mindspore as ms

    from launcher.core.rundir.job_json import spec_from_json
    from src.data import dataset
    from src.train import build_network, configure_context
    from src.training.evaluate import evaluate
    spec = spec_from_json(run_dir)
    configure_context(spec)
    net = build_network(spec)
    ms.load_param_into_net(net, ms.load_checkpoint(str(run_dir / "best.ckpt")))
    val = dataset.create_dataset(spec.val_dir, dataset.class_names(spec.val_dir),
                                 spec.image_size, spec.batch_size, training=False)
    return evaluate(net, val).accuracy


@pytest.mark.unit
def test_shards_are_disjoint_equal_and_change_per_epoch():
    for n, world in [(48, 2), (49, 2), (1000, 8), (7, 3)]:
        shards = [shard_indices(n, world, r, seed=1, epoch=3) for r in range(world)]
        flat = [i for s in shards for i in s]
        assert len(flat) == len(set(flat)) == (n // world) * world
        assert {len(s) for s in shards} == {n // world}
        assert shard_indices(n, world, 0, 1, 4) != shards[0]            # reshuffled per epoch
        assert shard_indices(n, world, 0, 1, 3) == shards[0]            # reproducible
        evals = [shard_indices(n, world, r, 1, None) for r in range(world)]
        assert sorted(i for s in evals for i in s) == list(range(n))   # eval: every image once


@pytest.mark.e2e
@SHARES_GRAPHS
@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_two_worker_run(job, launcher):
    if launcher == "mpirun":
        need_tool("mpirun", "to launch the two workers with Open MPI")
    r = packrun("run", job, f"--launcher={launcher}", "--workers=2", f"--name=dp_{launcher}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = run_dir_of(r)
    logs = run_dir / "logs"
    assert (logs / "worker_0.log").is_file() and (logs / "worker_1.log").is_file()
    assert "Epoch 2/2" in r.stdout  # the console follows rank 0
    d = digests(run_dir)
    assert d[0] == d[1], "ranks ended with different weights"
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[0]["steps"] == 48 // 2 // 8  # the shard's steps, not the whole set's
    assert "Epoch 1/2" not in (logs / "worker_1.log").read_text()  # only rank 0 reports
    # bind_cores (default): each worker on its own core of this machine's two, and in its own
    # directory (ranks/<rank>/); with one core, one data pipeline worker
    bound = {}
    for rank in (0, 1):
        m = re.search(r"rank (\d): cores (\S+) \((\d+)\), (\d+) data pipeline worker\(s\), "
                      r"working directory (\S+), evaluation (sharded|on rank 0)",
                      (logs / f"worker_{rank}.log").read_text())
        assert m and int(m.group(1)) == rank, f"worker_{rank}.log does not state its cores"
        bound[rank] = m.group(2)
        assert (m.group(3), m.group(4)) == ("1", "1")
        assert m.group(5) == str(run_dir / "ranks" / str(rank))
        assert m.group(6) == "sharded"  # eval_mode "auto" with 2 workers
    assert sorted(bound.values()) == ["0", "1"]
    assert sorted(p.name for p in run_dir.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    best = max(rows, key=lambda row: (row["val_acc"], row["epoch"]))
    assert single_process_accuracy(run_dir) == best["val_acc"]
    assert processes_of(run_dir) == []


@pytest.mark.e2e
@SHARES_GRAPHS
def test_sharded_evaluation_equals_single_process(job):
    r = packrun("run", job, "--workers=2", "--eval_mode=sharded", "--epochs=1", "--name=dp_shev")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = run_dir_of(r)
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert single_process_accuracy(run_dir) == row["val_acc"]


def _start(job, *flags):
    return subprocess.Popen(packrun_argv("run", job, "--workers=2", *flags), cwd=REPO,
                            env=packrun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_workers(proc, run_root: Path, name: str,
                      timeout=180) -> tuple[Path, dict[int, int]]:
    """Run dir and {rank: pid} once both workers have finished a training step. A child of a
    rank (a worker's subprocess before its exec) is no rank."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"packrun ended ({proc.returncode}) before both workers "
                                 f"trained:\n{out[-2000:]}{err[-3000:]}")
        dirs = sorted(run_root.glob(f"{name}-*"))
        if dirs and "step" in _read(dirs[-1] / "logs" / "worker_0.log") + \
                _read(dirs[-1] / "metrics.jsonl"):
            pids = {}
            for p in psutil.process_iter(["cmdline"]):
                try:
                    if str(dirs[-1]) not in (p.info["cmdline"] or []) or \
                            _is_rank(p.parent(), dirs[-1]):
                        continue
                    env = p.environ()
                except psutil.NoSuchProcess:
                    continue
                if env.get("MS_ROLE") == "MS_WORKER":
                    pids[int(env["RANK_ID"])] = p.pid
            if len(pids) == 2:
                return dirs[-1], pids
        time.sleep(0.5)
    raise AssertionError("workers did not start training")


def _is_rank(p: psutil.Process | None, run_dir: Path) -> bool:
    """msrun, a worker's parent, names the run directory too, but has no rank."""
    try:
        return p is not None and str(run_dir) in p.cmdline() and \
            p.environ().get("MS_ROLE") == "MS_WORKER"
    except psutil.NoSuchProcess:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.e2e
def test_kill_9_of_one_rank_takes_the_job_down(job):
    proc = _start(job, "--epochs=50", "--name=dp_kill")
    run_dir, pids = _wait_for_workers(proc, job.parent / "runs", "dp_kill")
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    _out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30
    assert proc.returncode != 0
    assert "rank 1 was killed" in err
    assert f"last lines of {run_dir}/logs/worker_1.log" in err
    assert processes_of(run_dir) == []


@pytest.mark.e2e
def test_sigterm_stops_every_worker_and_keeps_best_ckpt_valid(job):
    import mindspore as ms
    proc = _start(job, "--epochs=50", "--name=dp_term")
    run_dir, _ = _wait_for_workers(proc, job.parent / "runs", "dp_term")
    while not (run_dir / "best.ckpt").exists():
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 12
    assert proc.returncode == 128 + signal.SIGTERM
    assert processes_of(run_dir) == []
    assert "end_point.weight" in ms.load_checkpoint(str(run_dir / "best.ckpt"))


@pytest.mark.unit
def test_busy_explicit_port_is_an_error_before_start(job):
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        r = packrun("run", job, "--workers=2", f"--master_port={port}", timeout=60)
    assert r.returncode == 2
    assert f"master_port {port} is already in use" in r.stderr
    assert "Traceback" not in r.stderr
