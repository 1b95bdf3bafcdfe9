"""TEST ONLY: make a worker fail on purpose at a given rank, epoch and step, so that the restart,
failure-report and requeue paths are tested with real processes
(tests/launcher/supervise/test_restarts.py).

Armed by the environment variable FAULT_ENV of launcher/core/rundir/names.py (PACKRUN_TEST_FAULT):
`ACTION:rank=R:epoch=E:step=S`, ACTION one of
  kill   the worker SIGKILLs itself (what the OOM killer or a node loss does),
  raise  a RuntimeError (a bug, a device error),
  exit2  a UserError (bad input found late: exit 2, never retried),
  stop   creates preempt.requested, so the stop request lands exactly at that step,
fired at the step's end, and, in the data loader of epoch E (a map on its batches, so the rank
blocks where a real pipeline would: fetching the batch of step S, while the others wait for it in
the step's collective),
  hang   blocks forever before batch S (the stall watchdog's test: hang_in_data_loader),
  slow   sleeps `seconds` before each batch from S to the epoch's end
         (`slow:rank=R:epoch=E:step=S:seconds=X`: a slow but progressing rank).
It fires on the first attempt only (launcher/runfiles.ATTEMPT_ENV is 1 or unset), so the
restarted run proceeds. TRACE_ENV (PACKRUN_TEST_TRACE_STEPS=1) prints `trained step E.S` after
every step, so a test counts the steps a run really trained, and `loss of step E.S: L` (the loss
the step computed, read from the network's output, not from packrun's records). Never set
either in a real job.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from typing import Callable, Mapping

from mindspore.train.callback import Callback

from launcher.core.errors import UserError
from launcher.core.rundir.names import ATTEMPT_ENV, FAULT_ENV, PREEMPT_FLAG, TRACE_ENV

SPEC = re.compile(r"(kill|raise|exit2|stop|hang|slow):rank=(\d+):epoch=(\d+):step=(\d+)"
                  r"(?::seconds=(\d+(?:\.\d+)?))?")
DATA_ACTIONS = ("hang", "slow")


class Fault(Callback):
    """Runs before the trainer's own callbacks (src/train.Callbacks.all), but after Report has
    counted the step (the position it reads is updated by whichever runs first)."""

    def __init__(self, action: str, rank: int, epoch: int, step: int, position, run_dir):
        super().__init__()
        self.action, self.at, self.position, self.run_dir = action, (epoch, step), position, run_dir

    def on_train_step_end(self, run_context):
        if (self.position.epoch, self.position.steps_done(run_context.original_args())) != \
                self.at:
            return
        print(f"{FAULT_ENV}: {self.action} at epoch {self.at[0]} step {self.at[1]}", flush=True)
        if self.action == "stop":
            (self.run_dir / PREEMPT_FLAG).touch()
            return
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.action == "exit2":
            raise UserError(f"{FAULT_ENV}: injected bad input at epoch {self.at[0]} "
                            f"step {self.at[1]}")
        raise RuntimeError(f"{FAULT_ENV}: injected failure at epoch {self.at[0]} "
                           f"step {self.at[1]}")


class StepTrace(Callback):
    def __init__(self, position):
        super().__init__()
        self.position = position

    def on_train_step_end(self, run_context):
        outputs = run_context.original_args().net_outputs
        loss = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        loss = float(loss.asnumpy()) if hasattr(loss, "asnumpy") else float(loss)
        where = f"{self.position.epoch}.{self.position.step}"
        print(f"trained step {where}\nloss of step {where}: {loss!r}", flush=True)


def from_env(env: Mapping[str, str], rank: int, position, run_dir) -> tuple[list, list]:
    """The test-only callbacks the environment asks for on this rank and attempt: (to run before
    the trainer's callbacks, to run after them)."""
    fault = _fault(env, rank, position, run_dir)
    return ([fault] if fault else []), ([StepTrace(position)] if env.get(TRACE_ENV) == "1" else [])


def _parse(env: Mapping[str, str]) -> tuple[str, int, int, int, float] | None:
    """(action, rank, epoch, step, seconds) of the armed fault, or None (none, or not the first
    attempt)."""
    text = env.get(FAULT_ENV, "")
    if not text or env.get(ATTEMPT_ENV, "1") != "1":
        return None
    m = SPEC.fullmatch(text)
    if m is None:
        raise UserError(f"{FAULT_ENV}={text!r}: expected ACTION:rank=R:epoch=E:step=S "
                        "(ACTION kill, raise, exit2, stop, hang; slow with :seconds=X)")
    action, r, epoch, step = m.group(1), *map(int, m.groups()[1:4])
    return action, r, epoch, step, float(m.group(5) or 0)


def _fault(env: Mapping[str, str], rank: int, position, run_dir) -> Fault | None:
    parsed = _parse(env)
    if parsed is None or parsed[0] in DATA_ACTIONS or parsed[1] != rank:
        return None
    action, r, epoch, step, _ = parsed
    return Fault(action, r, epoch, step, position, run_dir)


def hang_in_data_loader(epoch: int, step: int) -> None:
    """Never returns: a data pipeline stuck fetching the batch of `step` (a dead file system, a
    deadlocked reader)."""
    print(f"{FAULT_ENV}: hang in the data loader at epoch {epoch} step {step}", flush=True)
    while True:
        time.sleep(60)


def in_data(env: Mapping[str, str], rank: int, train_data: Callable):
    """`train_data(epoch)` (an epoch's batches), with the armed hang / slow fault of this rank
    in its data pipeline; `train_data` itself when none is armed here."""
    parsed = _parse(env)
    if parsed is None or parsed[0] not in DATA_ACTIONS or parsed[1] != rank:
        return train_data
    action, _, at_epoch, at_step, seconds = parsed

    def data(epoch: int):
        batches = train_data(epoch)
        if epoch != at_epoch:
            return batches
        counter = itertools.count(1)

        def fault(label):
            n = next(counter)
            if action == "hang" and n == at_step:
                hang_in_data_loader(epoch, n)
            if action == "slow" and n >= at_step:
                if n == at_step:
                    print(f"{FAULT_ENV}: slow data loader from epoch {epoch} step {n}: "
                          f"{seconds:g} s per batch", flush=True)
                time.sleep(seconds)
            return label
        return batches.map(operations=fault, input_columns="label", num_parallel_workers=1,
                           python_multiprocessing=False)
    return data
