"""The tests' shared helpers, in one place (tests/conftest.py loads this module as a pytest
plugin, so its fixtures reach every test without an import).

Test data: tiny ImageFolders of real JPEGs (scikit-learn's digit scans, upscaled) and job files
that point at them; the digits are exported once per test run. Running things: `packrun()` runs
this checkout's CLI in a subprocess (`packrun_argv()` / `packrun_env()` build the same command
for a `Popen` that must stay alive), `run_dir_of()` reads the run directory it printed,
`wait_for()` polls, `processes_of()` lists what still runs in a run directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from launcher.core.paths import REPO  # the checkout under test: the one repository root
from launcher.demo.digits_data import export_digits

# A copy of ../shared/fixtures/modelzoo_resnet50_1001.json (the Model Zoo's resnet50(1001)
# parameters in definition order), kept in the repo so the tests need nothing beside it.
MODELZOO_RESNET50 = REPO / "tests" / "fixtures" / "modelzoo_resnet50_1001.json"

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


@pytest.fixture(scope="session")
def digits_2class(tmp_path_factory) -> Path:
    """<root>/{train,val}/digit_{0,1}/*.jpg: 24 train and 8 val images per class, 32 px."""
    root = tmp_path_factory.mktemp("digits2")
    export_digits(root, [0, 1], size=32, train_per_class=24, val_fraction=0.1, val_per_class=8)
    return root


@pytest.fixture
def tiny_job(tmp_path, digits_2class) -> Path:
    """<tmp_path>/tiny.toml: write_tiny_job on digits_2class, two epochs."""
    return write_tiny_job(tmp_path / "tiny.toml", digits_2class, epochs=2)


@pytest.fixture
def data(tmp_path, digits_2class) -> Path:
    """A private, writable copy of digits_2class, for tests that break it."""
    root = tmp_path / "data"
    shutil.copytree(digits_2class, root)
    return root


def small_job(tmp_path: Path, data: Path, name: str = "small", **extra) -> Path:
    """<tmp_path>/job.toml: resnet18, 32 px, one epoch on `data`; `extra` adds or overrides."""
    keys = dict(name=name, arch="resnet18", num_classes=2, train_dir=str(data / "train"),
                val_dir=str(data / "val"), image_size=32, batch_size=8, epochs=1,
                output_dir=str(tmp_path / "runs"))
    return write_job(tmp_path / "job.toml", **(keys | extra))


@pytest.fixture
def make_job(tmp_path):
    """`make_job(name="demo", **keys)` writes <tmp>/<name>.toml whose train_dir / val_dir exist
    (two empty class folders each) and whose output_dir is <tmp>/runs, and returns its path;
    `keys` add or override job keys (Python str / int / float / bool values). For launcher
    tests that render or check but never train."""
    def make(name: str = "demo", **keys):
        data = tmp_path / "data"
        for split in ("train", "val"):
            for cls in ("cat", "dog"):
                (data / split / cls).mkdir(parents=True, exist_ok=True)
        values = {"name": name, "train_dir": str(data / "train"), "val_dir": str(data / "val"),
                  "output_dir": str(tmp_path / "runs")} | keys
        return write_job(tmp_path / f"{name}.toml", **values)
    return make


# ---------------------------------------------------------------------------------------------
# Running things
# ---------------------------------------------------------------------------------------------

# A stand-in for an interpreter or launcher (msrun, python) in rendered launch scripts: logs
# "launch $SITE_VAR $FROM_SETUP ARGS" to $SITE_LOG, sleeps $STUB_SLEEP s, exits $STUB_EXIT.
STUB_LAUNCHER = ('#!/bin/bash\necho "launch $SITE_VAR $FROM_SETUP $*" >> "$SITE_LOG"\n'
                 'sleep "${STUB_SLEEP:-0}"\nexit "${STUB_EXIT:-0}"\n')


def packrun_argv(*args) -> list[str]:
    """`python -m launcher.cli.main ARGS...` with this interpreter."""
    return [sys.executable, "-m", "launcher.cli.main", *map(str, args)]


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


def shown(result: subprocess.CompletedProcess) -> str:
    """A finished command's status and the ends of its output, for an assertion's message."""
    return (f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n"
            f"{result.stderr[-4000:]}")


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
    shown = text if isinstance(output, str) else output.stdout + output.stderr
    found = [line.split("packrun: run directory ", 1)[1] for line in text.splitlines()
             if line.startswith("packrun: run directory ")]
    assert found, shown[-3000:]
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
    """Command lines of live processes that name the run directory."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(run_dir) in text:
            found.append(text)
    return found


def params(ckpt: Path) -> dict:
    """A checkpoint's parameters as numpy arrays, without the epoch / val_acc records."""
    import mindspore as ms  # (here, not at the top: the unit tier loads this module too)
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(ckpt)).items()
            if k not in ("epoch", "val_acc")}


@pytest.fixture(params=["graph", "pynative"])
def mode(request):
    """Run the test in MindSpore's GRAPH_MODE and in PYNATIVE_MODE, then restore the previous
    mode (MindSpore is imported only by the tests that take this fixture)."""
    import mindspore as ms
    previous = ms.get_context("mode")
    ms.set_context(mode={"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}[request.param])
    yield request.param
    ms.set_context(mode=previous)
