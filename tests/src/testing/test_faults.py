"""The test-only data-loader faults (src/testing/faults.py): `slow` delays the batches of one
rank's epoch from a step on, in its pipeline; `hang` and `slow` are armed on the first attempt
and the named rank only; a malformed fault is one line. (`hang` itself blocks for good: the e2e
tests of the stall watchdog in tests/launcher/supervise/test_restarts.py.)"""

import time

import mindspore.dataset as ds
import numpy as np
import pytest

from launcher.core.errors import UserError
from launcher.core.rundir.names import ATTEMPT_ENV, FAULT_ENV
from src.testing import faults

pytestmark = pytest.mark.unit


def batches(epoch: int):
    data = ds.GeneratorDataset([(np.full(2, i, np.float32), np.int32(i)) for i in range(8)],
                               ["image", "label"], shuffle=False)
    return data.batch(2)


def _times(data) -> list[float]:
    out, t0 = [], time.monotonic()
    for _ in data.create_tuple_iterator(num_epochs=1):
        out.append(time.monotonic() - t0)
        t0 = time.monotonic()
    return out


def test_slow_delays_the_batches_from_its_step_in_the_named_ranks_pipeline():
    env = {FAULT_ENV: "slow:rank=1:epoch=2:step=3:seconds=0.3"}
    slowed = faults.in_data(env, 1, batches)
    labels = [b[1].asnumpy().tolist() for b in slowed(2).create_tuple_iterator(num_epochs=1)]
    assert labels == [[0, 1], [2, 3], [4, 5], [6, 7]]          # the data itself is untouched
    assert sum(_times(slowed(2))) >= 0.6                       # batches 3 and 4: 0.3 s each
    assert sum(_times(slowed(1))) < 0.3                        # another epoch: not slowed
    assert faults.in_data(env, 0, batches) is batches          # another rank: untouched
    assert faults.in_data(env | {ATTEMPT_ENV: "2"}, 1, batches) is batches   # a restart
    hang = {FAULT_ENV: "hang:rank=0:epoch=1:step=2"}
    assert faults.in_data(hang, 0, batches) is not batches
    assert faults.from_env(hang, 0, None, None) == ([], [])    # no step-end callback for it


def test_a_malformed_fault_is_one_line():
    with pytest.raises(UserError, match=r"expected ACTION:rank=R:epoch=E:step=S \(ACTION kill, "
                                        r"raise, exit2, stop, hang; slow with :seconds=X\)"):
        faults.in_data({FAULT_ENV: "hang:rank=0"}, 0, batches)
