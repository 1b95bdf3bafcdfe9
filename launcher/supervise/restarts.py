"""The one restart loop around a launch (`packrun run`, `debug`, `node-launch`): attempts are
begun and ended in the run directory (launcher/core/rundir/attempts.py), a retryable failure is
launched again after a doubling back-off, up to the job's max_restarts. Under Slurm the batch
program plays this loop by requeueing the job (launcher/node/batch.py).
"""

from __future__ import annotations

import signal as signals
import sys
import time
from pathlib import Path
from typing import Callable

from launcher.core.log import get_logger
from launcher.core.rundir import failure
from launcher.core.rundir.attempts import BACKOFF_S, Result, begin, end, write_state
from launcher.core.rundir.names import EXIT_REQUEUE
from launcher.core.rundir.state import Phase
from launcher.supervise import processes

log = get_logger(__name__)


def say_run_directory(run_dir: Path, code: int) -> int:
    """The end of `packrun run` (one machine or several): the run directory is the command's
    result, printed also under --quiet: on stdout after a success, on stderr after a failure,
    not after a stop request (the stop said where to resume). Returns `code`."""
    if code == 0:
        log.info("packrun: run finished")
        print(f"packrun: run directory {run_dir}", flush=True)
    elif code != EXIT_REQUEUE:
        print(f"packrun: run directory {run_dir}", file=sys.stderr, flush=True)
    return code


def backoff(restart: int) -> float:
    first, longest = BACKOFF_S
    return min(first * 2 ** restart, longest)


def _wait(seconds: float) -> int | None:
    """Sleep, unless packrun is asked to stop: then the signal."""
    with processes.forward_signals([]) as got:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and got["signal"] is None:
            time.sleep(0.1)
    return got["signal"]


def with_restarts(run_dir: Path, kind: str, world: int, allowed: int,
                  launch: Callable[[int], Result],
                  only: Callable[[Path], bool] | None = None, record: bool = True) -> int:
    """Run `launch(attempt)` until it does not fail, fails for good, or has been restarted
    `allowed` times; the exit status of the last launch. `only` limits the logs this loop
    archives and `record` False leaves the run's state to another loop (node-launch: each
    node archives its own logs, node 0 keeps the state)."""
    restarts, first, attempt = 0, None, None
    while True:
        attempt = begin(run_dir, kind, world, allowed, attempt=attempt and attempt + 1,
                        only=only, record=record)
        first = first or attempt
        result = launch(attempt)
        record_ = end(run_dir, attempt, result, restart_allowed=restarts < allowed,
                      max_attempts=first + allowed, only=only, record_state=record)
        if record_ is None:
            return result.code
        log.error(f"packrun: {failure.summary(record_)}")
        if record_["action"] != failure.RESTARTED:
            return result.code
        restarts += 1
        sig = _wait(backoff(restarts - 1))
        if sig is not None:
            if record:
                write_state(run_dir, state=Phase.STOPPED, ended=time.time(), exit_code=128 + sig)
            log.warning(f"packrun: stopped by {signals.Signals(sig).name} before the restart")
            return 128 + sig
