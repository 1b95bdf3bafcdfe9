"""The demo's target runs side by side, `slots` at a time.

A run of the demo's size spends most of its wall clock in one-core work (the worker's start and
`import mindspore`, graph compilation, the pictures, the exit) around a few seconds of training:
two at a time on 2 cores finish together in about 0.6x the time of one after the other, with the
same weights (issue 30). Each run is prepared here as `packrun debug` prepares one (preflight,
run directory) and runs as the child command that runs such a directory, `packrun debug --resume
RUN_DIR` (as a sweep's points do), so supervision, signals and logs are those of a single run.
Its console goes to the run's logs/console.out; `follow` copies it to this console, one run after
the other in the demo's order (live for the run being followed), so the demo's output reads as
before.
"""

from __future__ import annotations

import codecs
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import psutil

from launcher.core.log import console, get_logger
from launcher.core.paths import importable
from launcher.core.rundir.layout import new_run_dir
from launcher.core.rundir.names import BEST_CKPT, CONSOLE_LOG
from launcher.core.rundir.progress import Stage, read_progress
from launcher.core.spec import JobSpec
from launcher.preflight.checks import check_debug_run
from launcher.preflight.data import preflight
from launcher.supervise import processes

log = get_logger(__name__)

POLL_S = 0.1
# A run's last seconds once its results are final (its closing line, digests, pictures and
# exit) hold up nobody while other runs still train: those get the cores first, the tail goes on
# at this lower CPU priority (nice). Not the last run's tail: the demo ends after it.
TAIL_NICE = 10


@dataclass
class Run:
    """One target run: queued, running or ended."""
    label: str
    spec: JobSpec
    run_dir: Path | None = None
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ended: float | None = None
    rc: int | None = None
    nice: int = 0  # a lower CPU priority (nice(1)) for a run off the critical path
    tail: bool = False  # its last seconds, its results final, at TAIL_NICE

    @property
    def final(self) -> bool:
        """Whether its results (metrics, best.ckpt) are final: it ended well, or its worker is
        past its last epoch (`results_final`)."""
        if self.ended is not None:
            return self.rc == 0
        return self.run_dir is not None and results_final(self.run_dir)

    @property
    def seconds(self) -> float:
        """Wall clock from the child's start to its end (or now)."""
        return (self.ended or time.monotonic()) - self.started


def results_final(run_dir: Path) -> bool:
    """Whether a running worker's results are final: rank 0 at its FINISHING stage or after
    (the closing line, the weights digests and the pictures are left) with best.ckpt written."""
    progress = read_progress(run_dir, 0)
    return (progress is not None and progress.stage in (Stage.FINISHING, Stage.DONE)
            and (run_dir / BEST_CKPT).is_file())


def lower_priority(proc: subprocess.Popen, nice: int) -> None:
    """`proc` and its descendants at CPU priority `nice` at least (never raised back)."""
    try:
        top = psutil.Process(proc.pid)
        family = [top, *top.children(recursive=True)]
    except psutil.Error:  # ended meanwhile
        return
    for p in family:
        try:
            if p.nice() < nice:
                p.nice(nice)
        except psutil.Error:
            pass


def prepare_debug_run(spec: JobSpec) -> tuple[Path, str]:
    """What `packrun debug` does before its worker: preflight (bad input fails the demo at
    once, exit 2) and the run directory; (the run directory, the lines debug prints)."""
    summary = preflight(spec)
    check_debug_run(spec)
    run_dir = new_run_dir(spec)
    return run_dir, (f"packrun: run directory {run_dir}\n"
                     f"packrun: {summary['train_images']} train / {summary['val_images']} val "
                     f"images in {len(summary['classes'])} classes "
                     f"({summary['images_checked']} checked)\n")


def debug_command(run_dir: Path) -> list[str]:
    """The child that runs a prepared run directory as `packrun debug` would."""
    return [sys.executable, "-m", "launcher.cli.main", "debug", "--resume", str(run_dir)]


class SideBySide:
    """Runs jobs `slots` at a time in the order they were added; `stop()` ends what runs.
    `prepare(spec)` and `command(run_dir)`: `prepare_debug_run`, `debug_command` (tests swap
    them)."""

    def __init__(self, slots: int, prepare=prepare_debug_run, command=debug_command):
        self.slots = max(1, slots)
        self.prepare, self.command = prepare, command
        self.runs: list[Run] = []
        self.env = importable()

    def add(self, label: str, spec: JobSpec, nice: int = 0) -> Run:
        run = Run(label, spec, nice=nice)
        self.runs.append(run)
        self.poll()
        return run

    def running(self) -> list[Run]:
        return [r for r in self.runs if r.proc is not None and r.ended is None]

    def poll(self) -> None:
        """Start queued runs while a slot is free; the last seconds of a run whose results are
        final go on at TAIL_NICE while another run's are not."""
        for run in self.runs:
            if run.proc is None and len(self.running()) < self.slots:
                self._start(run)
        final = [run.final for run in self.runs]
        if all(final):
            return
        for run, done in zip(self.runs, final):
            if done and not run.tail and run.ended is None and run.proc is not None:
                run.tail = True
                lower_priority(run.proc, TAIL_NICE)

    def _start(self, run: Run) -> None:
        """The run prepared here, its worker in a child with its console in logs/console.out."""
        run.run_dir, preamble = self.prepare(run.spec)
        out = run.run_dir / CONSOLE_LOG
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "ab") as f:
            f.write(preamble.encode())
            f.flush()
            run.started = time.monotonic()
            command = self.command(run.run_dir)
            if run.nice:  # nice(1) execs the command: same process, and its children inherit it
                command = ["nice", "-n", str(run.nice), *command]
            run.proc = processes.spawn(command, env=self.env, stdout=f)
        # its end, timed as it happens (the demo may be busy with the source run meanwhile)
        threading.Thread(target=self._wait, args=(run,), daemon=True).start()

    @staticmethod
    def _wait(run: Run) -> None:
        assert run.proc is not None
        returncode = run.proc.wait()
        run.rc = processes.exit_code(returncode)
        run.ended = time.monotonic()

    def follow(self, run: Run, out: TextIO | None = None,
               meanwhile: Callable[[], None] = lambda: None) -> int:
        """Copy `run`'s console to `out` (this console) until it ends; its exit status. The
        other runs go on meanwhile (and queued ones start as slots free); `meanwhile()` is
        called at each look."""
        out = out or console()
        while run.proc is None:  # queued behind runs that are not followed yet
            self.poll()
            meanwhile()
            time.sleep(POLL_S)
        assert run.run_dir is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with open(run.run_dir / CONSOLE_LOG, "rb") as f:
            while True:
                self.poll()
                meanwhile()
                ended = run.ended is not None
                chunk = f.read()
                if chunk:
                    out.write(decoder.decode(chunk))
                    out.flush()
                if ended and not chunk:
                    break
                if not chunk:
                    time.sleep(POLL_S)
        assert run.rc is not None
        return run.rc

    def stop(self) -> None:
        """Stop every run still going (the demo failed or was interrupted)."""
        for run in self.running():
            assert run.proc is not None
            processes.stop(run.proc)
