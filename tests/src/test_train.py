"""src/train.py: the data preparation (the validation set is batched by eval_batch_size) and
the closing barrier of a collective's ranks."""

import dataclasses

import pytest

from launcher.core.spec import JobSpec
from src import train
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


@pytest.mark.parametrize("code", [0, 75])
def test_a_failed_closing_barrier_keeps_the_exit_status(tmp_path, monkeypatch, capsys, code):
    """The run has ended and written its exit status; the barrier only lets ranks leave at
    once. MindSpore's CPU AllReduce failing there (its peer already gone) keeps the status."""
    calls = []

    def failing_barrier(values, world):
        calls.append(world)
        raise RuntimeError("Launch kernel failed, name:Default/AllReduce-op62\n\n--- C++ ---")

    monkeypatch.setattr("src.training.collective.allreduce_sum", failing_barrier)
    monkeypatch.setattr(train, "run", lambda run_dir, rank: code)
    for var, value in {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "MS_NODE_ID": "0",
                       "RANK_ID": "0"}.items():
        monkeypatch.setenv(var, value)
    assert train.main(["train.py", str(tmp_path)]) == code
    assert calls == [2]  # the barrier ran, over the whole world
    err = capsys.readouterr().err
    assert "closing barrier failed after the run ended (Launch kernel failed" in err
    assert "Traceback" not in err
