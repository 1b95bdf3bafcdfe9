"""The tests' shared helpers, in one place; tests import them from here. (The shared fixtures,
digits_2class, reference_run, tiny_job, data, make_job, mode, hccn_conf and cluster, are in
tests/conftest.py:
every test gets them without an import.)

- Job files and data: `write_job()`, `write_tiny_job()`, `small_job()`, HCCN_CONF,
  `resnet18_ckpt()`, MODELZOO_RESNET50.
- Reference runs: `shared_run()` trains a run once per test session, shared by the modules and
  the pytest-xdist workers that compare against it (conftest's `reference_run`), of a job with
  INTERRUPTED_JOB's keys for the tests that interrupt a run (TEST_STALL_S: the stall_timeout of
  those that hang one); `session_dir()` is the directory the
  xdist workers of one session share.
- Running things: `stub_tools_path()` is a PATH for stub tools, `packrun()` runs this
  checkout's CLI in a subprocess (`packrun_argv()` /
  `packrun_env()` build the same command for a `Popen` that must stay alive;
  `packrun_in_process()` calls the CLI's entry here instead, for tests of what a command that
  starts nothing says), `shown()` puts its
  result in an assertion's message, `run_dir_of()` reads the run directory it printed,
  `wait_for()` polls, `processes_of()` lists what still runs in a run directory, `stub_repo()`
  is a checkout whose worker is a stub, `digests()` reads the ranks' final weight digests.
- TensorBoard files: `tensorboard_events()` (TensorBoard's own reader), `scalar_points()`,
  `float32()`, `traced_losses()` (the losses PACKRUN_TEST_TRACE_STEPS printed).
- Tools the environment provides: `need_tool()` skips a test here and fails it in CI;
  `update_requested()` lets a test rewrite its expected files, never in CI.
- MindSpore (imported only when called: the unit tier loads this module too): `params()`,
  `conv_grads()`, `rel_err()`.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

import numpy as np
import psutil
import pytest

from launcher.core.paths import REPO  # the checkout under test: the one repository root
from launcher.core.rundir.names import FAILURE_JSON, attempt_logs

# A copy of ../shared/fixtures/modelzoo_resnet50_1001.json (the Model Zoo's resnet50(1001)
# parameters in definition order), kept in the repo so the tests need nothing beside it.
MODELZOO_RESNET50 = REPO / "tests" / "fixtures" / "modelzoo_resnet50_1001.json"

# ---------------------------------------------------------------------------------------------
# The environment: tools CI installs, files tests may rewrite
# ---------------------------------------------------------------------------------------------

# The Debian package of every tool a test needs (.ci/run apt-installs each one; libc-bin is
# Essential, on every Debian system). tests/test_helpers.py holds both.
APT_PACKAGES = {
    "shellcheck": "shellcheck",
    "mpirun": "openmpi-bin",
    "scontrol": "slurm-client", "sbatch": "slurm-client", "sinfo": "slurm-client",
    "slurmctld": "slurmctld", "slurmd": "slurmd",
    "munged": "munge", "mungekey": "munge",
    "ip": "iproute2",
    "nsenter": "util-linux", "unshare": "util-linux", "taskset": "util-linux",
    "setpriv": "util-linux",
    "getent": "libc-bin",
    "chromium": "chromium",
    "g++": "g++",
    "sshd": "openssh-server", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
}


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """Whether this is CI (CI=true, as .ci/run's runner sets it)."""
    return (os.environ if env is None else env).get("CI") == "true"


def unavailable(reason: str, env: Mapping[str, str] | None = None) -> NoReturn:
    """Skip the test, saying why; under CI=true fail it instead: CI (.ci/run) provides every
    tool and service the tests need, so a missing one there is a broken CI, never a pass."""
    if in_ci(env):
        pytest.fail(f"{reason}; CI=true: .ci/run must provide it, so this test fails",
                    pytrace=False)
    pytest.skip(reason)


def need_tool(name: str, why: str, env: Mapping[str, str] | None = None) -> str:
    """The path of the command `name`; without it the test skips here and fails in CI, naming
    the Debian package that has it. `why`: what the test needs it for."""
    path = shutil.which(name, path=None if env is None else env.get("PATH"))
    if path:
        return path
    unavailable(f"{name} is not installed (apt-get install -y {APT_PACKAGES[name]}), "
                f"needed {why}", env)


def update_requested(variable: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether `variable`=1 asks a test to rewrite its expected files (goldens, README blocks)
    from what the code now gives. Never in CI: there the rewritten files would pass for the
    expected ones and every such test would pass whatever the code does; the run fails."""
    env = os.environ if env is None else env
    if env.get(variable) != "1":
        return False
    if in_ci(env):
        pytest.fail(f"{variable}=1 with CI=true: CI checks the expected files and never "
                    "rewrites them; regenerate them locally and commit the reviewed diff",
                    pytrace=False)
    return True


# ---------------------------------------------------------------------------------------------
# Job files and data
# ---------------------------------------------------------------------------------------------


def write_job(path: Path, **keys) -> Path:
    """A flat TOML job file from keyword arguments (strings quoted, bools lower-case)."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    path.write_text("".join(f"{k} = {fmt(v)}\n" for k, v in keys.items()))
    return path


def write_tiny_job(path: Path, data: Path, **keys) -> Path:
    """A job file at `path` for a seconds-long CPU run on the digits at `data` (resnet18, 32 px,
    two classes, batch 8, one epoch), named after the file, writing runs to <its folder>/runs.
    `keys` add or override job keys; a key given as None is left out of the file (the job's
    default then holds)."""
    tiny = dict(name=path.stem, arch="resnet18", num_classes=2, train_dir=str(data / "train"),
                val_dir=str(data / "val"), image_size=32, batch_size=8, epochs=1, lr=0.01,
                device="CPU", output_dir=str(path.parent / "runs"), min_crop_scale=0.5,
                hflip=False, num_parallel_workers=2)
    return write_job(path, **{k: v for k, v in (tiny | keys).items() if v is not None})


def small_job(tmp_path: Path, data: Path, name: str = "small", **extra) -> Path:
    """<tmp_path>/job.toml: resnet18, 32 px, one epoch on `data`; `extra` adds or overrides."""
    keys = dict(name=name, arch="resnet18", num_classes=2, train_dir=str(data / "train"),
                val_dir=str(data / "val"), image_size=32, batch_size=8, epochs=1,
                output_dir=str(tmp_path / "runs"))
    return write_job(tmp_path / "job.toml", **(keys | extra))


# An Ascend server's /etc/hccn.conf for 8 cards: card i at 192.168.100.(101 + i).
HCCN_CONF = "".join(f"address_{i}=192.168.100.{101 + i}\nnetmask_{i}=255.255.255.0\n"
                    for i in range(8))


def resnet18_ckpt(path: Path, num_classes: int = 2) -> Path:
    """A resnet18 checkpoint with a `num_classes` head (fresh weights) at `path`."""
    import mindspore as ms

    from src.model.resnet import resnet18
    ms.save_checkpoint(resnet18(num_classes), str(path))
    return path


# ---------------------------------------------------------------------------------------------
# Running things
# ---------------------------------------------------------------------------------------------

# A stand-in for an interpreter or launcher (msrun, python) in rendered launch scripts: logs
# "launch $SITE_VAR $FROM_SETUP ARGS" to $SITE_LOG, sleeps $STUB_SLEEP s, exits $STUB_EXIT.
STUB_LAUNCHER = ('#!/bin/bash\necho "launch $SITE_VAR $FROM_SETUP $*" >> "$SITE_LOG"\n'
                 'sleep "${STUB_SLEEP:-0}"\nexit "${STUB_EXIT:-0}"\n')


@functools.cache
def _python3_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="packrun-tests-python3-"))
    (d / "python3").symlink_to(sys.executable)
    return d


def stub_tools_path(stubs: Path, path: str | None = None) -> str:
    """A PATH for the stub tools in `stubs` (scripts that start `#!/usr/bin/env python3`): the
    stubs first, then a directory holding only `python3`, this interpreter, then `path` (default:
    this process's PATH). CI's PATH starts with the venv already; a developer's may find a shim
    first (pyenv's is a bash script that costs about 0.1 s a start, paid by every stub call)."""
    rest = os.environ["PATH"] if path is None else path
    return os.pathsep.join([str(stubs), str(_python3_dir()), rest])


def packrun_argv(*args) -> list[str]:
    """`python -m launcher.cli.main ARGS...` with this interpreter."""
    return [sys.executable, "-m", "launcher.cli.main", *map(str, args)]


def as_at_a_terminal(argv: list[str]) -> list[str]:
    """`argv`, started with SIGINT back at its default disposition, for a process a test will
    Ctrl-C. A shell that starts the test run in the background (`cmd &` in a script, nohup)
    starts it with SIGINT ignored, every child inherits that, and a Python started so never
    raises KeyboardInterrupt; a user's Ctrl-C at a terminal reaches a process that does. (A
    wrapper that resets it and execs, not a preexec_fn: the test runner has threads.)"""
    reset = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
             "os.execvp(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", reset, *map(str, argv)]


def packrun_env(env: Mapping[str, str] | None = None,
                env_extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to run this checkout's CLI in: `env` (default: this process's) updated
    with `env_extra`, with the checkout on PYTHONPATH unless it is there already. From a cwd
    outside the checkout, `-m launcher.cli.main` would otherwise import an installed packrun."""
    out = dict(os.environ if env is None else env) | dict(env_extra or {})
    path = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO) not in path:
        out["PYTHONPATH"] = os.pathsep.join([str(REPO), *path])
    return out


def packrun(*args, cwd: str | Path = REPO, env: Mapping[str, str] | None = None,
            env_extra: Mapping[str, str] | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
    """Run this checkout's CLI: `python -m launcher.cli.main ARGS...` in a subprocess, from `cwd`
    (default: the checkout), in `packrun_env(env, env_extra)`, output captured as text."""
    return subprocess.run(packrun_argv(*args), cwd=cwd, env=packrun_env(env, env_extra),
                          capture_output=True, text=True, timeout=timeout)


def packrun_in_process(*args, cwd: str | Path = REPO, env: Mapping[str, str] | None = None,
                       env_extra: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """packrun()'s result without a process: this checkout's CLI (launcher.cli.main.run, what
    the entry point runs before it exits) called here with argv ARGS, from `cwd`, in the
    environment packrun() would give it, its stdout and stderr captured and the status it
    returns turned into the exit status as sys.exit does (an uncaught exception into its
    traceback on stderr and status 1, as Python prints it). (Not main() itself: after a command
    that imported MindSpore it leaves the process without its teardown, os._exit.) For tests
    of what a command says and its exit status when it starts nothing (bad input, help,
    rendering); a test whose point is the process (signals, the real entry point, file
    descriptors, children) uses packrun(). What a command may change in this process is put
    back: os.environ, the working directory, sys.argv, the console's level (read from the
    environment, as a new process does) and the signal handlers."""
    import contextlib
    import io
    import logging
    import signal
    import traceback

    from launcher.cli.main import run
    from launcher.core.log import LEVEL_ENV, LEVELS, ROOT

    new_env = packrun_env(env, env_extra)
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    console = logging.getLogger(ROOT)
    saved_level = console.level
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    saved_handlers = {s: signal.getsignal(s) for s in signals}
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    try:
        os.environ.clear()
        os.environ.update(new_env)
        os.chdir(cwd)
        sys.argv = ["packrun", *argv]
        console.setLevel(LEVELS.get(new_env.get(LEVEL_ENV, ""), logging.INFO))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = run(argv)
                if status is None or isinstance(status, int):
                    code = status or 0
                else:               # sys.exit("message"): Python prints it, status 1
                    print(status, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 (what the interpreter does with an uncaught one)
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        console.setLevel(saved_level)
        for s, h in saved_handlers.items():
            signal.signal(s, h)
    return subprocess.CompletedProcess(packrun_argv(*args), code, out.getvalue(),
                                       err.getvalue())


def shown(result: subprocess.CompletedProcess | str) -> str:
    """For an assertion's message: a finished command's status and the ends of its stdout and
    stderr, or the end of a console text."""
    if isinstance(result, str):
        return result[-5000:]
    return (f"exit {result.returncode}\n--- stdout\n{result.stdout[-5000:]}\n--- stderr\n"
            f"{result.stderr[-4000:]}")


def attempt_shown(run_dir: str | Path, attempt: int,
                  result: subprocess.CompletedProcess | str | None = None) -> str:
    """For an assertion's message about a failure record: what decided it. The attempt's record,
    the end of its launcher's and ranks' logs, its pid and exit files (logs/attempt_<k>/: the
    launchers name workers by pid), then the command's `result` (`shown`), so that a wrong
    culprit in CI can be read from CI's output alone."""
    logs = Path(run_dir) / attempt_logs(attempt)
    parts = []
    for path in [logs / FAILURE_JSON] + sorted(logs.glob("*.log")) + \
            sorted(logs.glob("*.out")) + sorted(logs.glob("*.pid")) + sorted(logs.glob("*.exit")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        parts.append(f"--- {path.name}\n{text[-1500:]}")
    parts = parts or [f"(nothing in {logs})"]
    if result is not None:
        parts.append(shown(result))
    return "\n".join(parts)


def batch_step_succeeded(batch_log: str) -> bool:
    """Whether a job.sbatch log shows its srun step ending well: exit status 0, or every rank
    finished with status 0 before a crash while the processes shut down (which the batch
    script treats as completed, launcher.core.rundir.attempts.finished_anyway)."""
    return ("packrun: srun exited with status 0" in batch_log
            or "after every rank had finished with exit status 0" in batch_log)


def run_dir_of(output: str | subprocess.CompletedProcess) -> Path:
    """The (last) run directory a packrun command printed ("packrun: run directory DIR"), from
    its result (stdout) or its console text."""
    text = output if isinstance(output, str) else output.stdout
    said = text if isinstance(output, str) else output.stdout + output.stderr
    found = [line.split("packrun: run directory ", 1)[1] for line in text.splitlines()
             if line.startswith("packrun: run directory ")]
    assert found, said[-3000:]
    return Path(found[-1])


def wait_for(condition, timeout_s: float, what: str = "condition", every: float = 0.2):
    """Poll `condition` every `every` s until it returns something true, and return that;
    AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every)
    return result


def processes_of(run_dir: Path) -> list[str]:
    """Command lines of the live processes (other than this one) that name the run directory:
    what a launch left running, once it has ended."""
    return [cmd for _, cmd in _naming(run_dir)]


def pids_of(run_dir: Path) -> list[int]:
    """The pids of those processes (to clean up after a test that fails on them)."""
    return [pid for pid, _ in _naming(run_dir)]


def _naming(run_dir: Path) -> list[tuple[int, str]]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(run_dir) in cmd and p.pid != os.getpid():
            found.append((p.pid, cmd))
    return found


# A rank's closing line (src/train.py): "rank 1: final weights sha256 a29a...,
# batchnorm statistics sha256 5c1e..."
FINAL_DIGESTS = re.compile(r"rank (\d+): final weights sha256 (\w+), "
                           r"batchnorm statistics sha256 (\w+)")


def digests(run_dir: Path, world: int = 2) -> dict[int, tuple[str, str]]:
    """{rank: (weights digest, batchnorm statistics digest)} from each rank's log of a run of
    `world` ranks (the first such line in logs/worker_<rank>.log, which must name that rank).
    Equal digests: equal final weights and statistics."""
    found = {}
    for rank in range(world):
        m = FINAL_DIGESTS.search((run_dir / "logs" / f"worker_{rank}.log").read_text())
        assert m, f"worker_{rank}.log has no final digest"
        assert int(m.group(1)) == rank, f"worker_{rank}.log states the digest of rank {m[1]}"
        found[rank] = (m.group(2), m.group(3))
    return found


def tensorboard_events(path: Path):
    """TensorBoard's own reader (EventAccumulator) over the event files in `path`, loaded, every
    point kept: what TensorBoard shows of that directory (purges included)."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0,
                                                        ea.TENSORS: 0})
    acc.Reload()
    return acc


def scalar_points(acc, tag: str) -> list[tuple[int, float]]:
    """[(step, value)] of a scalar tag, as TensorBoard plots it."""
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def float32(x: float) -> float:
    """`x` as TensorBoard stores a scalar (float32)."""
    return float(np.float32(x))


def traced_losses(log_text: str) -> dict[str, float]:
    """{"E.S": loss} from a worker log with PACKRUN_TEST_TRACE_STEPS=1 (src/testing/faults.py):
    the loss each step computed (the last attempt's, when the log has several)."""
    return {m[0]: float(m[1]) for m in re.findall(r"^loss of step (\d+\.\d+): (\S+)$",
                                                   log_text, re.M)}


def stub_repo(tmp_path: Path, worker: str) -> Path:
    """<tmp_path>/repo: a checkout whose worker (src/train.py) is the script `worker`, with
    packrun's launcher package beside it (the launch scripts split cores with it)."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "train.py").write_text(worker)
    (repo / "launcher").symlink_to(REPO / "launcher")
    return repo


# ---------------------------------------------------------------------------------------------
# Reference runs, one per session
# ---------------------------------------------------------------------------------------------

# The job of the tests that interrupt a run (kill, stop, hang, chaos) and compare what the
# recovered run ends with against an uninterrupted one (tests/launcher/supervise/test_restarts.py,
# test_no_orphans.py, test_resume.py), with write_tiny_job's keys: 6 steps an epoch in debug, 3
# with 2 workers. Momentum, a warm-up + cosine schedule and flips make a resume that restores less
# than everything (optimizer moments, global_step, an epoch's data order) end elsewhere; three
# epochs leave a whole epoch after the one a kill, stop or hang in epoch 2 interrupts (test_resume
# kills in epoch 3: epochs = 4 there). One set of keys for the three modules: each uninterrupted
# run (debug; 2 workers) is trained once per session (conftest's `reference_run`), and all their
# runs share its compiled graphs: the compile cache's key holds every job key but names, paths
# and launch settings, so a test's flag that changes one (log_every_steps, tensorboard,
# stall_timeout) compiles anew, about 20 s a 2-worker run on the loaded 2-core machine. Hence
# log_every_steps = 1 here, which test_restarts' TensorBoard check needs.
INTERRUPTED_JOB = dict(epochs=3, lr=0.02, momentum=0.8, lr_schedule="cosine", warmup_epochs=1,
                       hflip=True, num_parallel_workers=1, log_every_steps=1)


# The stall_timeout of the tests that hang a rank on purpose (test_restarts, the Slurm batch
# program's in tests/launcher/slurm/test_client.py): long enough for a step, an evaluation batch
# or a save of a tiny job on a loaded 2-core machine; compilation is under startup_timeout. The
# longest silence between two progress records of a healthy run of INTERRUPTED_JOB, polled every
# 0.1 s over test_no_orphans and test_restarts (2026-12-07, load average 3-5): 1.6 s (the final
# pictures of a 2-worker run), every step, evaluation batch and save under 1 s. 12 s leaves 7
# times that. Each hang test waits the bound out once.
TEST_STALL_S = 12


def session_dir(tmp_path_factory) -> Path:
    """The directory every process of this test session shares: under pytest-xdist the parent
    of the workers' own base directories (pytest-N/ above popen-gwK/), else the base itself."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_run(shared: Path, data: Path, mode: str, *flags: str,
               env_extra: Mapping[str, str] | None = None,
               run: Callable[..., subprocess.CompletedProcess] | None = None,
               **keys) -> Path:
    """The run directory of `packrun MODE JOB FLAGS` (env_extra added to its environment) for
    JOB = write_tiny_job(data, **keys), trained once per test session however many modules and
    pytest-xdist workers ask: the first asker trains it under a file lock in `shared` (see
    session_dir), the others wait on the lock and get the same directory. (`data` is not part
    of what identifies the run: every worker's digits_2class holds the same images.) A failed
    run fails every asker with its output, without running again. READ ONLY for the askers:
    other tests compare against it; copy it to change it. `run` stands in for packrun() (the
    helpers' own tests)."""
    what = json.dumps([mode, list(flags), sorted((env_extra or {}).items()),
                       sorted(keys.items())])
    home = shared / "reference-runs" / hashlib.sha256(what.encode()).hexdigest()[:16]
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes, or the process dies
        record = home / "result.json"
        if not record.exists():
            job = write_tiny_job(home / "reference.toml", data, **keys)
            r = (run or packrun)(mode, job, *flags, env_extra=env_extra)
            record.write_text(json.dumps(dict(
                what=what, returncode=r.returncode, said=shown(r),
                run_dir=str(run_dir_of(r)) if r.returncode == 0 else None)))
        result = json.loads(record.read_text())
    assert result["returncode"] == 0, f"the reference run {what} failed:\n{result['said']}"
    return Path(result["run_dir"])


# ---------------------------------------------------------------------------------------------
# MindSpore
# ---------------------------------------------------------------------------------------------


def params(ckpt: Path) -> dict:
    """A checkpoint's parameters as numpy arrays, without the epoch / val_acc records."""
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(ckpt)).items()
            if k not in ("epoch", "val_acc")}


@functools.cache
def _conv_grads_cell():
    import mindspore as ms
    from mindspore import nn, ops

    class ConvGrads(nn.Cell):
        """(d input, d weights) of a conv for a given output cotangent."""

        def __init__(self, conv):
            super().__init__()
            self.conv = conv
            self.weights = ms.ParameterTuple(conv.trainable_params())
            self.grad = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)

        def construct(self, x, dout):
            return self.grad(self.conv, self.weights)(x, dout)

    return ConvGrads


def conv_grads(conv):
    """A cell that gives ((d input,), (d weight[, d bias])) of the convolution `conv` for an
    output cotangent: `conv_grads(conv)(x, dout)`."""
    return _conv_grads_cell()(conv)


def kernel_variants(cases, compiled_pure) -> list:
    """The parameters (mode, kernels, *case) of a CPU fast-path test over `cases` (tuples), for
    `@pytest.mark.parametrize(..., indirect=["mode"])` (tests/conftest.py's `mode`): the native
    kernels compiled (GRAPH_MODE, e2e) and op by op (PYNATIVE_MODE, unit) in every case; the pure
    formulation (MindSpore's ops only, as where no C++ compiler built the kernels) op by op in
    every case, but compiled only in the cases at the indices `compiled_pure`, one for each
    branch of its code: compiling shows whether a branch compiles, the numbers are the op-by-op
    ones, and each compile takes seconds (18 fewer compiles, ~27 s of CI's CPU)."""
    params = []
    for i, case in enumerate(cases):
        for kernels in ("native", "pure"):
            for mode in ("graph", "pynative"):
                if mode == "graph" and kernels == "pure" and i not in compiled_pure:
                    continue
                tier = pytest.mark.e2e if mode == "graph" else pytest.mark.unit
                params.append(pytest.param(mode, kernels, *case, marks=tier))
    return params


def rel_err(actual, expected) -> float:
    """max |actual - expected| relative to max |expected|."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())
