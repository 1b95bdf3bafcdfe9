"""src/train.py: the validation set is batched by eval_batch_size; the worker's fast exit."""

import dataclasses
import subprocess
import sys

import pytest

from launcher.core.paths import REPO
from launcher.core.spec import JobSpec
from src.train import prepare_data
from src.training.parallel import Parallel

pytestmark = pytest.mark.unit


def spec_on(data, **keys) -> JobSpec:
    return dataclasses.replace(JobSpec(), train_dir=str(data / "train"), val_dir=str(data / "val"),
                               num_classes=2, image_size=32, batch_size=8,
                               num_parallel_workers=1, **keys)


@pytest.mark.parametrize("eval_batch_size, batches", [(0, [8, 8]), (10, [10, 6]), (100, [16])])
def test_validation_batches_by_eval_batch_size_else_batch_size(digits_2class, eval_batch_size,
                                                               batches):
    data = prepare_data(spec_on(digits_2class, eval_batch_size=eval_batch_size), Parallel())
    got = [len(labels) for _, labels in data.val_ds.create_tuple_iterator(num_epochs=1)]
    assert got == batches  # 16 validation images, the last batch kept
    assert data.data_args["batch_size"] == 8  # training keeps batch_size


def test_leave_runs_the_exit_handlers_flushes_and_exits_with_the_code(tmp_path):
    # The worker's fast exit (src/train.py leave): skipping the interpreter's teardown must not
    # skip what the exit handlers write (logging, MindSpore's checkpoint saver) nor buffered
    # output, and must keep the exit status the supervisor reads.
    marker = tmp_path / "handler_ran"
    code = ("import atexit, sys\n"
            "from pathlib import Path\n"
            "from src.train import leave\n"
            f"atexit.register(lambda: Path({str(marker)!r}).write_text('yes'))\n"
            "sys.stdout.write('buffered, no newline')\n"
            "sys.stderr.write('to stderr')\n"
            "leave(3)\n"
            "print('not reached')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3
    assert r.stdout == "buffered, no newline"
    assert r.stderr == "to stderr"
    assert marker.read_text() == "yes"
