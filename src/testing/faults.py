"""TEST ONLY: make a worker fail on purpose at a given rank, epoch and step, so that the restart,
failure-report and requeue paths are tested with real processes
(tests/launcher/supervise/test_restarts.py).

Armed by the environment variable FAULT_ENV of launcher/core/rundir/names.py (PACKRUN_TEST_FAULT):
`ACTION:rank=R:epoch=E:step=S`, ACTION one of
  kill   the worker SIGKILLs itself (what the OOM killer or a node loss does),
  raise  a RuntimeError (a bug, a device error),
  exit2  a UserError (bad input found late: exit 2, never retried),
  stop   creates preempt.requested, so the stop request lands exactly at that step.
It fires on the first attempt only (launcher/runfiles.ATTEMPT_ENV is 1 or unset), so the
restarted run proceeds. TRACE_ENV (PACKRUN_TEST_TRACE_STEPS=1) prints `trained step E.S` after
every step, so a test counts the steps a run really trained, and `loss of step E.S: L` (the loss
the step computed, read from the network's output, not from packrun's records). Never set
either in a real job.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Mapping

from mindspore.train.callback import Callback

from launcher.core.errors import UserError
from launcher.core.rundir.names import ATTEMPT_ENV, FAULT_ENV, PREEMPT_FLAG, TRACE_ENV

SPEC = re.compile(r"(kill|raise|exit2|stop):rank=(\d+):epoch=(\d+):step=(\d+)")


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


def _fault(env: Mapping[str, str], rank: int, position, run_dir) -> Fault | None:
    text = env.get(FAULT_ENV, "")
    if not text or env.get(ATTEMPT_ENV, "1") != "1":
        return None
    m = SPEC.fullmatch(text)
    if m is None:
        raise UserError(f"{FAULT_ENV}={text!r}: expected ACTION:rank=R:epoch=E:step=S "
                        "(ACTION kill, raise or exit2)")
    action, r, epoch, step = m.group(1), *map(int, m.groups()[1:])
    return Fault(action, r, epoch, step, position, run_dir) if r == rank else None
