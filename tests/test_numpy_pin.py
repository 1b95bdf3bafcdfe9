"""The numpy pin (setup.cfg): MindSpore 2.10's C++ layer is built against NumPy 1.x."""

import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.unit


def test_numpy_is_1x():
    assert int(np.__version__.split(".")[0]) == 1, (
        f"numpy {np.__version__}: MindSpore 2.10 needs numpy < 2 (see setup.cfg)")


def test_first_eager_op_and_numpy_datasets_work_in_a_fresh_process():
    # Under numpy 2 the first eager reshape raises SystemError and NumpySlicesDataset fails.
    code = (
        "import mindspore as ms, numpy as np, mindspore.dataset as ds\n"
        "from mindspore import ops\n"
        "assert ops.reshape(ms.Tensor([1.0, 2.0]), (2, 1)).shape == (2, 1)\n"
        "d = ds.NumpySlicesDataset(np.arange(6).reshape(3, 2), shuffle=False)\n"
        "assert sum(1 for _ in d.create_tuple_iterator(output_numpy=True)) == 3\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "compiled using NumPy 1.x" not in r.stderr
