"""src/train.py's data preparation: the validation set is batched by eval_batch_size."""

import dataclasses

import pytest

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
