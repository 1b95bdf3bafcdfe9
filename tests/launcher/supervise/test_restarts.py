"""Jobs that recover by themselves: the restart loop (launcher/supervise/restarts.py) over the
attempts a run directory records (launcher/core/rundir/attempts.py, failure.py): automatic
restarts after a dead rank, error.json / failure.json, never retrying bad input, a stop request
honoured at a step and resumed from the next one, and `packrun status` of local runs. Real
workers on CPU (resnet18, 32 px digits: 3 steps per epoch with 2 workers, 6 with 1; the job and
its uninterrupted runs are test_no_orphans' and the session's: INTERRUPTED_JOB); faults are
injected with the test-only PACKRUN_TEST_FAULT (src/testing/faults.py, first attempt only)."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from launcher.core.rundir import attempts, failure
from launcher.core.rundir import state as runstate
from launcher.core.rundir.names import (
    FAULT_ENV,
    PREEMPT_FLAG,
    TB_DIR,
    TRACE_ENV,
    attempt_logs,
    worker_error,
    worker_exit,
)
from src.train import sink_chunks
from tests.helpers import (
    INTERRUPTED_JOB,
    REPO,
    STUB_LAUNCHER,
    TEST_STALL_S,
    attempt_shown,
    digests,
    float32,
    packrun,
    packrun_argv,
    packrun_env,
    run_dir_of,
    scalar_points,
    shown,
    tensorboard_events,
    traced_losses,
    write_tiny_job,
)

EPOCHS = INTERRUPTED_JOB["epochs"]


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def trained_steps(log: Path) -> list[str]:
    return re.findall(r"^trained step (\d+\.\d+)$", log.read_text(), re.M)


@pytest.fixture(scope="module")
def job(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("restarts")
    return write_tiny_job(d / "restarts.toml", digits_2class, name="rs", **INTERRUPTED_JOB)


# =============================================================================================
# Without training
# =============================================================================================

@pytest.mark.unit
def test_sink_chunks_bound_the_steps_between_stop_checks():
    assert sink_chunks(0, 100, 50) == [(50, 2)]
    assert sink_chunks(0, 7, 3) == [(3, 2), (1, 1)]
    assert sink_chunks(4, 7, 50) == [(3, 1)]          # a resumed epoch: the rest, in one chunk
    assert sink_chunks(0, 5, 1) == [(1, 5)]
    for first, steps, size in [(0, 97, 10), (13, 97, 10), (96, 97, 4)]:
        chunks = sink_chunks(first, steps, size)
        assert sum(s * n for s, n in chunks) == steps - first
        assert max(s for s, _ in chunks) <= size


@pytest.mark.unit
@pytest.mark.parametrize("result, allowed, action", [
    (attempts.Result(1, 1, 9), True, failure.RESTARTED),
    (attempts.Result(1, 1, 9), False, failure.GAVE_UP),
    (attempts.Result(2, 0, exit_code=2), True, failure.NOT_RETRYABLE),       # bad input
    (attempts.Result(1, 0, exit_code=2), True, failure.NOT_RETRYABLE),       # reported as 1
    (attempts.Result(143, user_stop=True), True, None),                      # the user's stop
    (attempts.Result(75), True, None),                                       # stop on request
    (attempts.Result(0), True, None),
])
def test_what_an_attempts_end_decides(tmp_path, result, allowed, action):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "worker_1.log").write_text("Epoch 1/4\n")
    n = attempts.begin(tmp_path, "run", 2, 1)
    record = attempts.end(tmp_path, n, result, restart_allowed=allowed, max_attempts=2)
    state = attempts.read_state(tmp_path)["state"]
    assert (record and record["action"]) == action
    if action is None:
        assert state in ("completed", "stopped")
    else:
        assert state == ("restarting" if action == failure.RESTARTED else "failed")
        assert json.loads((tmp_path / attempt_logs(1) / "failure.json").read_text()) == record
    assert (tmp_path / attempt_logs(1) / "worker_1.log").read_text() == "Epoch 1/4\n"


@pytest.mark.unit
def test_the_failure_summary_names_rank_host_signal_error_and_what_happens_next(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / worker_error(1)).write_text(json.dumps(dict(
        rank=1, host="node7", type="RuntimeError", message="HCCL link down\nmore", epoch=2,
        step=3, traceback="Traceback ...")))
    record = failure.failure_record(tmp_path, attempt=1, max_attempts=4, rank=1, host="vm",
                                    exit_code=1, signal=None, reason="", action="restarted")
    assert failure.summary(record) == (
        "attempt 1 failed: rank 1 on node7 exited with status 1 in epoch 2 step 3; restarting "
        "from last.ckpt (attempt 2 of 4)\n  first error: RuntimeError: HCCL link down")
    killed = failure.failure_record(tmp_path, attempt=2, max_attempts=2, rank=0, host="vm",
                                    exit_code=None, signal=9, reason="", action="gave up")
    assert failure.summary(killed).startswith(
        "attempt 2 failed: rank 0 on vm was killed by signal 9 (SIGKILL); giving up")


@pytest.mark.unit
def test_a_killed_worker_is_named_by_the_pid_msrun_reports(tmp_path):
    log = tmp_path / "msrun-node0.out"
    log.write_text("[ERROR] Worker process 4242 exit with exception. Error code: -9.\n")
    assert failure.killed_by([tmp_path / "nope.log", log], 4242) == 9
    assert failure.killed_by([log], 424) is None


@pytest.mark.unit
def test_status_of_a_local_run_that_died_with_packrun(tmp_path, job):
    from launcher.core.rundir.job_json import spec_to_json
    from launcher.core.spec import load_job
    (tmp_path / "logs").mkdir()
    (tmp_path / "job.json").write_text(spec_to_json(load_job(job, {})))
    attempts.begin(tmp_path, "run", 2, 0)
    attempts.write_state(tmp_path, pid=2 ** 22 + 12345)   # no such process
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.75}\n')
    (tmp_path / "last.json").write_text('{"epoch": 1, "step": 2}\n')
    rs = runstate.read_run_state(tmp_path)
    assert (rs.state, rs.launch, rs.attempt, rs.epoch, rs.step, rs.epochs, rs.best_acc, rs.world) \
        == ("failed", "run", 1, 1, 2, EPOCHS, 0.75, 2)
    r = packrun("status", tmp_path)
    assert r.returncode == 0, shown(r)
    assert r.stdout.splitlines()[1] == \
        f"epoch 1/{EPOCHS} and 2 step(s) of epoch 2, best acc 0.75 (epoch 1)"
    r = packrun("status", tmp_path / "logs")
    assert r.returncode == 2 and "is not a run directory (no job.json)" in r.stderr


# =============================================================================================
# Real workers
# =============================================================================================

# The uninterrupted runs of the job (the same job as test_resume's and test_no_orphans'), each
# trained once per session whichever module or xdist worker asks first (conftest reference_run).

@pytest.fixture(scope="module")
def debug_reference(reference_run):
    return reference_run("debug", env_extra={TRACE_ENV: "1"}, **INTERRUPTED_JOB)


@pytest.fixture(scope="module")
def uninterrupted(reference_run):
    return reference_run("run", "--workers=2", **INTERRUPTED_JOB)


@pytest.mark.e2e
def test_a_killed_rank_is_restarted_and_the_run_ends_as_an_uninterrupted_one(job, uninterrupted):
    t0 = time.monotonic()
    r = packrun("run", job, "--workers=2", "--name=restarted", "--max_restarts=1",
                "--log_every_steps=1",
                env_extra={FAULT_ENV: "kill:rank=1:epoch=2:step=2", TRACE_ENV: "1"})
    print(f"restarted run: {time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    assert [row["epoch"] for row in rows(run_dir)] == list(range(1, EPOCHS + 1))
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["rank"], record["signal"], record["action"], record["attempt"]) == \
        (1, 9, "restarted", 1), attempt_shown(run_dir, 1, r)
    assert json.loads((run_dir / attempt_logs(1) / "failure.json").read_text()) == record
    assert re.search(r"^packrun: attempt 1 failed: rank 1 on \S+ was killed by signal 9 "
                     r"\(SIGKILL\); restarting from last.ckpt \(attempt 2 of 2\)$", r.stderr, re.M)
    attempt1 = run_dir / attempt_logs(1)
    assert f"{FAULT_ENV}: kill at epoch 2 step 2" in (attempt1 / "worker_1.log").read_text()
    assert f"Epoch 1/{EPOCHS}" in (attempt1 / "worker_0.log").read_text()
    assert not (attempt1 / worker_exit(1).split("/")[-1]).exists()   # it was killed
    assert "resuming from " in (run_dir / "logs" / "worker_0.log").read_text()
    assert digests(run_dir, 2) == digests(uninterrupted, 2)
    rs = runstate.read_run_state(run_dir)
    assert (rs.state, rs.attempt, rs.epoch, rs.failures) == ("completed", 2, EPOCHS, 1)
    s = packrun("status", run_dir)
    assert s.stdout.splitlines()[0].startswith("restarted: completed (run, 2 worker(s)), "
                                               "attempt 2 (max_restarts 1), "), shown(s)
    assert "attempt 1 failed: rank 1 on " in s.stdout
    check_tensorboard_after_the_restart(run_dir, attempt1)


def check_tensorboard_after_the_restart(run_dir: Path, attempt1: Path) -> None:
    """Rank 0's event files, one per attempt: attempt 1 wrote steps past the end of epoch 1
    (where attempt 2 resumes), and TensorBoard shows each global step once, attempt 2's values
    from step 4 on (the purge), every value what that attempt's step computed."""
    steps = 3  # per epoch: 48 images, batch 8, 2 workers
    files = sorted((run_dir / TB_DIR).glob("events.*"))
    assert [f.name.split(".")[-2] for f in files] == ["attempt001", "attempt002"], files
    alone = run_dir / "attempt1_tb"
    alone.mkdir()
    shutil.copy(files[0], alone)
    written = [s for s, _ in scalar_points(tensorboard_events(alone), "train/loss")]
    assert written[:4] == [1, 2, 3, 4]       # steps 2.1 (and maybe 2.2) past the resume point
    first = traced_losses((attempt1 / "worker_0.log").read_text())
    second = traced_losses((run_dir / "logs" / "worker_0.log").read_text())
    assert sorted(second) == [f"{e}.{s}" for e in range(2, EPOCHS + 1) for s in (1, 2, 3)]
    expected = [((e - 1) * steps + s, float32((first if e == 1 else second)[f"{e}.{s}"]))
                for e in range(1, EPOCHS + 1) for s in (1, 2, 3)]
    acc = tensorboard_events(run_dir / TB_DIR)
    assert scalar_points(acc, "train/loss") == expected
    assert scalar_points(acc, "epoch/val_acc") == \
        [(row["epoch"] * steps, float32(row["val_acc"])) for row in rows(run_dir)]


@pytest.mark.e2e
def test_without_restarts_the_same_kill_ends_the_run(job, uninterrupted):
    # The uninterrupted run's job and workers (the kill ends it in epoch 2 all the same): after
    # it, this run reuses its compiled graphs (the key holds the epochs of a cosine schedule)
    # instead of compiling the same graphs on both ranks beside it.
    r = packrun("run", job, "--workers=2", "--name=norestart", "--tensorboard=false",
                env_extra={FAULT_ENV: "kill:rank=1:epoch=2:step=1"})
    assert r.returncode not in (0, 2), shown(r)
    run_dir = run_dir_of(r.stderr)
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["rank"], record["signal"], record["action"]) == (1, 9, "gave up"), \
        attempt_shown(run_dir, 1, r)
    assert "rank 1 was killed by signal 9 (SIGKILL)" in r.stderr
    assert runstate.read_run_state(run_dir).state == "failed"
    assert [row["epoch"] for row in rows(run_dir)] == [1]
    assert not (run_dir / TB_DIR).exists()   # tensorboard = false writes none


@pytest.mark.e2e
def test_a_raising_worker_leaves_error_json_and_is_restarted(job, debug_reference):
    # the job as debug_reference ran it: both attempts reuse its compiled graphs (a failed
    # attempt keeps none of its own)
    r = packrun("debug", job, "--name=raises", "--max_restarts=1",
                env_extra={FAULT_ENV: "raise:rank=0:epoch=2:step=2"})
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    err = json.loads((run_dir / attempt_logs(1) / "worker_0.error.json").read_text())
    assert err["type"] == "RuntimeError" and (err["epoch"], err["step"]) == (2, 2)
    assert "injected failure at epoch 2 step 2" in err["message"]
    assert err["traceback"].startswith("Traceback (most recent call last):")
    assert "src/testing/faults.py" in err["traceback"]
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["rank"], record["exit_code"], record["action"]) == (0, 1, "restarted"), \
        attempt_shown(run_dir, 1, r)
    assert record["first_error"].startswith("RuntimeError: PACKRUN_TEST_FAULT: injected failure")
    assert [row["epoch"] for row in rows(run_dir)] == list(range(1, EPOCHS + 1))


@pytest.mark.e2e
def test_bad_input_is_not_retried(job):
    r = packrun("debug", job, "--name=badinput", "--epochs=2", "--max_restarts=3",
                env_extra={FAULT_ENV: "exit2:rank=0:epoch=1:step=2"})
    assert r.returncode == 2, shown(r)
    run_dir = run_dir_of(r.stdout)
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["exit_code"], record["action"], record["attempt"]) == (2, "not retryable", 1)
    assert "attempt 1 failed: rank 0 on " in r.stderr and "not retried" in r.stderr  # a failure
    assert not (run_dir / attempt_logs(2)).exists()
    assert json.loads((run_dir / "logs" / "worker_0.error.json").read_text())["type"] == \
        "UserError"


def _stop_mid_epoch(args: list, env: dict, log: Path,
                    at: str) -> tuple[subprocess.Popen, Path, str]:
    """Start packrun, create preempt.requested once `trained step <at>` is in `log`'s run's rank
    0 log; (the process, its run directory, the last step rank 0 had traced right after the
    request was made: under load this test may see the trace a step or more late, and the
    request is honoured within one step of when it was made, not of when the trace was read)."""
    out = log.open("w")
    proc = subprocess.Popen(packrun_argv(*args), cwd=REPO, env=packrun_env(env_extra=env),
                            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = re.findall(r"run directory (\S+)", log.read_text())
        if found:
            worker0 = Path(found[0]) / "logs" / "worker_0.log"
            if worker0.exists() and f"trained step {at}\n" in worker0.read_text():
                (Path(found[0]) / PREEMPT_FLAG).touch()
                requested_after = trained_steps(worker0)[-1]
                proc.wait(timeout=300)
                return proc, Path(found[0]), requested_after
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(log.read_text()[-3000:])


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["debug", "run"])
def test_a_stop_request_is_honoured_at_a_step_and_resumed_from_the_next(job, tmp_path, mode,
                                                                        request):
    workers = ["--workers=2"] if mode == "run" else []
    env = {TRACE_ENV: "1"}
    if mode == "debug":
        reference, world, steps = request.getfixturevalue("debug_reference"), 1, 6
    else:
        reference, world, steps = request.getfixturevalue("uninterrupted"), 2, 3
    proc, run_dir, requested_after = _stop_mid_epoch(
        [mode, job, *workers, f"--name=stop_{mode}"], env, tmp_path / "stopped.out", "2.1")
    text = (tmp_path / "stopped.out").read_text()
    assert proc.returncode == 75, text[-3000:]
    done = trained_steps(run_dir / "logs" / "worker_0.log")
    stopped_at = int(done[-1].split(".")[1])
    # within one step of the request: the step under way when it was made, at the latest
    assert len(done) - 1 - done.index(requested_after) in (0, 1), (requested_after, done)
    assert done[-1].startswith("2."), done  # (the steps below are epoch 2's)
    assert json.loads((run_dir / "last.json").read_text()) == {"epoch": 1, "step": stopped_at}
    assert [row["epoch"] for row in rows(run_dir)] == [1]
    rs = runstate.read_run_state(run_dir)
    assert (rs.state, rs.epoch, rs.step) == ("stopped", 1, stopped_at)
    resumed = packrun(mode, "--resume", run_dir, env_extra=env)
    assert resumed.returncode == 0, shown(resumed)
    log = (run_dir / "logs" / "worker_0.log").read_text()
    assert f"epoch 1 of {EPOCHS} done and {stopped_at} of {steps} steps of epoch 2" in log
    again = trained_steps(run_dir / "logs" / "worker_0.log")
    assert again[0] == f"2.{stopped_at + 1}"                      # no finished step rerun
    assert len(done) + len(again) == EPOCHS * steps
    assert [row["epoch"] for row in rows(run_dir)] == list(range(1, EPOCHS + 1))
    for a, b in zip(rows(reference), rows(run_dir)):
        assert (a["train_loss"], a["val_acc"], a["lr"]) == (b["train_loss"], b["val_acc"], b["lr"])
    assert digests(run_dir, world) == digests(reference, world)


@pytest.mark.unit
def test_node_launch_restarts_its_msrun_after_a_failure(make_job, tmp_path, monkeypatch):
    from launcher.core.spec import load_job
    from launcher.node import launch as node_launch
    from launcher.render.artifacts import write_run_dir
    python = tmp_path / "stub-python"
    python.write_text(STUB_LAUNCHER)
    python.chmod(0o755)
    for k in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("SITE_LOG", str(tmp_path / "launches"))
    monkeypatch.setenv("STUB_EXIT", "3")
    monkeypatch.setattr(attempts, "BACKOFF_S", (0.01, 0.01))
    # (bind_cores off: the stub interpreter stands in for msrun, not for the core split)
    run_dir, _ = write_run_dir(load_job(make_job(), {"max_restarts": 1, "bind_cores": False}),
                               slurm=True, python=str(python))
    assert node_launch.node_launch_command(str(run_dir), 0, "127.0.0.1", 8118) == 3
    assert len((tmp_path / "launches").read_text().splitlines()) == 2   # started twice
    first = json.loads((run_dir / attempt_logs(1) / "failure.json").read_text())
    second = json.loads((run_dir / attempt_logs(2) / "failure.json").read_text())
    assert (first["action"], second["action"]) == ("restarted", "gave up")
    assert first["exit_code"] == 3 and first["rank"] is None
    rs = runstate.read_run_state(run_dir)
    assert (rs.state, rs.launch, rs.attempt) == ("failed", "node-launch", 2)
    monkeypatch.setenv("STUB_EXIT", "2")                   # bad input: not restarted
    assert node_launch.node_launch_command(str(run_dir), 0, "127.0.0.1", 8118) == 2
    assert len((tmp_path / "launches").read_text().splitlines()) == 3
    assert json.loads((run_dir / "failure.json").read_text())["action"] == "not retryable"


@pytest.mark.e2e
def test_a_users_sigterm_is_not_retried(job, tmp_path):
    out = tmp_path / "console.out"
    with open(out, "w") as console:
        proc = subprocess.Popen(packrun_argv("debug", job, "--name=sigterm", "--max_restarts=3"),
                                cwd=REPO, env=packrun_env(env_extra={TRACE_ENV: "1"}),
                                stdout=console, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while "trained step 1.1\n" not in out.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, out.read_text()[-3000:]
        time.sleep(0.05)
    proc.terminate()
    assert proc.wait(timeout=120) == 143, out.read_text()[-3000:]
    run_dir = run_dir_of(out.read_text())
    assert not (run_dir / "failure.json").exists() and not (run_dir / attempt_logs(2)).exists()
    assert runstate.read_run_state(run_dir).state == "stopped"


@pytest.mark.e2e
def test_a_stop_at_an_epochs_last_step_keeps_the_epoch(job, debug_reference):
    env = {TRACE_ENV: "1", FAULT_ENV: "stop:rank=0:epoch=1:step=6"}   # creates the flag there
    r = packrun("debug", job, "--name=stop_last", env_extra=env)
    assert r.returncode == 75, shown(r)
    run_dir = run_dir_of(r.stdout)
    assert trained_steps(run_dir / "logs" / "worker_0.log") == [f"1.{i}" for i in range(1, 7)]
    assert "stopped on request (preempt.requested) at epoch 1 step 6; last.ckpt holds epoch 1:" \
        in r.stdout
    assert json.loads((run_dir / "last.json").read_text()) == {"epoch": 1, "step": 0}
    assert [row["epoch"] for row in rows(run_dir)] == [1]
    resumed = packrun("debug", "--resume", run_dir, env_extra={TRACE_ENV: "1"})
    assert resumed.returncode == 0, shown(resumed)
    again = trained_steps(run_dir / "logs" / "worker_0.log")
    assert again[0] == "2.1" and len(again) == (EPOCHS - 1) * 6
    assert digests(run_dir, 1) == digests(debug_reference, 1)
    # a request at the run's very last step: the run is complete (the job as debug_reference
    # ran it, whose compiled graphs it reuses)
    end = packrun("debug", job, "--name=stop_end",
                  env_extra={FAULT_ENV: f"stop:rank=0:epoch={EPOCHS}:step=6"})
    assert end.returncode == 0 and "End training, the best acc is: " in end.stdout, shown(end)


@pytest.mark.unit
def test_sink_mode_trains_each_epoch_in_chunks_and_stops_between_them():
    # Ascend/GPU only, so the loop is driven here by a stand-in Model that does what sink mode
    # does: one step-end callback per chunk of sink_size steps.
    from types import SimpleNamespace

    from src.train import Callbacks, ResumePoint, fit
    from src.training.callbacks import Position

    class Data:
        def __init__(self, start=0, n=7):
            self.start, self.n = start, n

        def skip(self, k):
            return Data(self.start + k, self.n - k)

        def take(self, n):
            return Data(self.start, n)

    position, calls = Position(7), []

    class Model:
        def train(self, chunks, data, callbacks, dataset_sink_mode, sink_size):
            assert dataset_sink_mode and data.n == chunks * sink_size
            calls.append((position.epoch, data.start, chunks, sink_size))
            for k in range(1, chunks + 1):
                position.steps_done(SimpleNamespace(cur_step_num=k * sink_size))
                if (position.epoch, position.step) == (2, 3):   # a stop request, seen here
                    position.stopped_at = (2, 3)
                    return

    spec = SimpleNamespace(epochs=3, sink_size=3)
    cbs = Callbacks(None, None, None, position)
    fit(spec, Model(), lambda epoch: Data(), cbs, ResumePoint(), sink_mode=True)
    assert calls == [(1, 0, 2, 3), (1, 6, 1, 1), (2, 0, 2, 3)]   # stopped after 3 steps
    calls.clear()
    position.stopped_at = None
    fit(spec, Model(), lambda epoch: Data(), cbs, ResumePoint(epoch=1, step=3), sink_mode=True)
    assert calls == [(2, 3, 1, 3), (2, 6, 1, 1), (3, 0, 2, 3), (3, 6, 1, 1)]


# =============================================================================================
# The stall watchdog (launcher/supervise/watchdog.py) with real workers
# =============================================================================================

@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["debug", "run"])
def test_a_rank_hanging_in_its_data_loader_is_named_with_its_stacks_and_restarted(job, mode,
                                                                                  request):
    """The rank blocks for good fetching the batch of epoch 2's step (msrun: rank 1, while rank
    0 waits for it in the step's collective): after stall_timeout the watchdog has every rank's
    stacks, failure.json names the rank and its frame, and the restart from last.ckpt ends with
    the uninterrupted run's weights."""
    if mode == "debug":
        reference, world, rank, args = request.getfixturevalue("debug_reference"), 1, 0, []
    else:
        reference, world, rank, args = request.getfixturevalue("uninterrupted"), 2, 1, \
            ["--workers=2"]
    t0 = time.monotonic()
    r = packrun(mode, job, *args, f"--name=hang_{mode}", "--max_restarts=1",
                f"--stall_timeout={TEST_STALL_S}",
                env_extra={FAULT_ENV: f"hang:rank={rank}:epoch=2:step=2"})
    print(f"hung and restarted {mode} run: {time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    attempt1 = run_dir / attempt_logs(1)
    assert f"{FAULT_ENV}: hang in the data loader at epoch 2 step 2" in \
        (attempt1 / f"worker_{rank}.log").read_text()
    record = json.loads((run_dir / "failure.json").read_text())
    stall = record["stall"]
    assert (record["rank"], record["action"], record["attempt"]) == (rank, "restarted", 1), \
        attempt_shown(run_dir, 1, r)
    assert (stall["rank"], stall["bound"], stall["bound_s"]) == (rank, "stall_timeout",
                                                                   TEST_STALL_S)
    assert stall["silent_s"] >= TEST_STALL_S
    hung = '/src/testing/faults.py", line '
    per_rank = {entry["rank"]: entry for entry in stall["per_rank"]}
    assert sorted(per_rank) == list(range(world))
    for other, entry in per_rank.items():
        assert entry["answered"] and entry["stage"] == "training" and entry["epoch"] == 2
        assert entry["stack"] == f"logs/attempt_1/worker_{other}.stack"
        stack = (run_dir / entry["stack"]).read_text()
        assert "(most recent call first):" in stack
        assert f"=== py-spy dump --native --pid {entry['pid']} ===" in stack   # native frames
        assert (hung in stack) == (other == rank)
    assert hung in per_rank[rank]["top_frame"] and \
        per_rank[rank]["top_frame"].endswith(" in hang_in_data_loader")
    if world == 2:   # both ranks stopped after step 2.1: the stacks tell which one is not in
        assert per_rank[0]["step"] == per_rank[1]["step"] == 1    # the collective
        assert stall["why"] == "it waits in its data pipeline; the others are not (in the " \
                               "collective)"
    assert re.search(rf"^packrun: attempt 1 failed: rank {rank} on \S+ stalled: no rank made "
                     rf"progress for \d+ s \(stall_timeout {TEST_STALL_S} s\) at training epoch "
                     r"2 step 1/\d; restarting from last.ckpt \(attempt 2 of 2\)$", r.stderr, re.M)
    assert re.search(rf"^  top frame of rank {rank}: File \"\S+/src/testing/faults.py\", line \d+ "
                     rf"in hang_in_data_loader \(logs/attempt_1/worker_{rank}.stack\)$", r.stderr,
                     re.M)
    assert [row["epoch"] for row in rows(run_dir)] == list(range(1, EPOCHS + 1))
    assert digests(run_dir, world) == digests(reference, world)
    rs = runstate.read_run_state(run_dir)
    assert (rs.state, rs.attempt, rs.failures) == ("completed", 2, 1)


@pytest.mark.e2e
def test_a_slow_but_progressing_rank_is_not_stopped(job):
    """Each of the last 3 batches of the epoch takes slow_s more, half of stall_timeout: the job
    is silent for longer than stall_timeout in all, never that long at once."""
    slow_s, bound = 6, 12
    r = packrun("debug", job, "--name=slow", "--epochs=1", "--warmup_epochs=0",
                f"--stall_timeout={bound}",
                env_extra={FAULT_ENV: f"slow:rank=0:epoch=1:step=4:seconds={slow_s}"})
    assert r.returncode == 0, shown(r)
    run_dir = run_dir_of(r.stdout)
    log = (run_dir / "logs" / "worker_0.log").read_text()
    assert f"{FAULT_ENV}: slow data loader from epoch 1 step 4: {slow_s} s per batch" in log
    assert 3 * slow_s > bound
    assert not (run_dir / "failure.json").exists() and "stalled" not in r.stderr
    assert not (run_dir / "logs" / "worker_0.stack").read_text()     # never asked
    rs = runstate.read_run_state(run_dir)
    assert (rs.state, rs.attempt, rs.epoch) == ("completed", 1, 1)
