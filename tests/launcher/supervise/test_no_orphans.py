"""No orphans, for real: kill -9 of each launcher (`packrun run`, `debug`, `node-launch`, the
Slurm batch program with its srun step) while its workers train leaves nothing running within a
bound, frees the run directory, and the resumed run ends with the uninterrupted run's weights
(launcher/supervise/lifeline.py). And chaos: one process of a 2-worker run (a rank, the
scheduler, msrun, the launcher), chosen with a fixed seed, killed at a random moment; every
trial ends with the uninterrupted weights, each epoch once, a loadable best.ckpt and nothing
running (tests/chaos.py; benchmarks/chaos.py runs more trials and prints the table).

The bound (GONE_BOUND_S) holds on a loaded machine; benchmarks/bench_orphans.py measures the
time it takes (the issue's figure: 10 s)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from launcher.core.rundir.names import TRACE_ENV
from tests import chaos
from tests.helpers import INTERRUPTED_JOB, digests, packrun, processes_of, write_tiny_job

pytestmark = pytest.mark.e2e

EPOCHS = INTERRUPTED_JOB["epochs"]
SEED, TRIALS = 31, 3  # victims: a rank, the scheduler, the launcher (tests/chaos.plan)


@pytest.fixture(scope="module")
def job(tmp_path_factory, digits_2class):
    """The job test_restarts interrupts too: the uninterrupted runs are the session's."""
    d = tmp_path_factory.mktemp("orphans")
    return write_tiny_job(d / "orphans.toml", digits_2class, **INTERRUPTED_JOB)


@pytest.fixture(scope="module")
def reference(reference_run):
    """The final weights of the job's uninterrupted 2-worker run (conftest reference_run,
    trained once per session)."""
    return digests(reference_run("run", "--workers=2", **INTERRUPTED_JOB))


def test_kill_9_of_packrun_debug_leaves_nothing_and_resume_ends_as_uninterrupted(job,
                                                                                   reference_run):
    launch = chaos.start_launcher("debug", job, job.parent / "runs", "killdebug")
    run_dir, gone_s, _ = chaos.kill_launcher(launch)
    print(f"kill -9 of packrun debug: gone in {gone_s:.1f} s")
    r = packrun("debug", "--resume", run_dir, timeout=chaos.RUN_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert chaos._epochs(run_dir) == list(range(1, EPOCHS + 1))
    uninterrupted = reference_run("debug", env_extra={TRACE_ENV: "1"}, **INTERRUPTED_JOB)
    assert digests(run_dir, world=1) == digests(uninterrupted, world=1)


def test_kill_9_of_node_launch_and_of_the_batch_program(job, reference, tmp_path):
    """One Slurm-style run directory, killed twice: node-launch, then job.sbatch's batch program
    (launcher/node/batch.py), which starts srun in a session of its own and, killed, used to
    leave the step running (srun here is a stand-in that runs the step's one task, msrun.sh of
    node 0, itself). Then the job runs again as a requeue would and ends with the uninterrupted
    run's weights."""
    launch = chaos.start_launcher("node-launch", job, tmp_path / "runs", "killnode")
    run_dir, gone_s, running = chaos.kill_launcher(launch)
    print(f"kill -9 of node-launch: {running} processes gone in {gone_s:.1f} s")
    assert running >= 4  # msrun, the scheduler, two ranks (and the lifeline's watcher)
    for rank in (0, 1):  # the killed attempt's: wait for the next one's
        (run_dir / "logs" / f"worker_{rank}.pid").unlink(missing_ok=True)
    env = chaos.batch_env(tmp_path / "bin")
    batch = subprocess.Popen(["bash", str(run_dir / "job.sbatch")], cwd=run_dir, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launch = chaos.Launch("batch", batch, run_dir, run_dir.parent, run_dir.name, 2)
    _, gone_s, _ = chaos.kill_launcher(launch)
    print(f"kill -9 of the batch program: gone in {gone_s:.1f} s")
    r = subprocess.run(["bash", str(run_dir / "job.sbatch")], cwd=run_dir, capture_output=True,
                       text=True, timeout=chaos.RUN_TIMEOUT_S,
                       env=chaos.batch_env(tmp_path / "bin", restart=1))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert digests(run_dir) == reference
    assert chaos._epochs(run_dir) == list(range(1, EPOCHS + 1))
    assert processes_of(run_dir) == []


def test_chaos_every_trial_ends_as_the_uninterrupted_run(job, reference):
    """Also kill -9 of `packrun run` itself (the launcher trial): everything it started ends
    within the bound and `packrun run --resume` ends with the uninterrupted weights."""
    trials = chaos.plan(SEED, TRIALS)
    assert "launcher" in [t.victim for t in trials]
    # The trials run side by side (each its own run directory, name and victim, found by its
    # run directory): a 2-worker run of this tiny job keeps the 2 cores about a third busy
    # (waits in the collectives, start-up, restarts), so one after the other they took
    # 130-150 s, mostly idle.
    with ThreadPoolExecutor(max_workers=TRIALS) as pool:
        list(pool.map(lambda trial: chaos.run_trial(job, trial, reference, EPOCHS), trials))
    for trial in trials:
        print(f"trial {trial.number}: killed {trial.killed} {trial.moment_s} s in: "
              f"{trial.outcome[:80]}")
    assert [t.outcome for t in trials] == ["ok"] * TRIALS, \
        "\n".join(f"trial {t.number} ({t.victim}, {t.moment_s} s): {t.outcome}" for t in trials)
