"""Helpers for the tests that compare MindSpore cells numerically (test_resnet.py,
test_cpu_fast_path.py). Kept out of data_fixtures.py, which every test loads: this module
imports MindSpore."""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops


class ConvGrads(nn.Cell):
    """(d input, d weights) of a conv for a given output cotangent."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv
        self.weights = ms.ParameterTuple(conv.trainable_params())
        self.grad = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)

    def construct(self, x, dout):
        return self.grad(self.conv, self.weights)(x, dout)


def rel_err(actual, expected) -> float:
    """max |actual - expected| relative to max |expected|."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())
