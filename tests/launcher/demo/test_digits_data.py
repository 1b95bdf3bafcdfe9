"""The demo's data: scikit-learn's digits, read without importing scikit-learn, equal to what its
load_digits gives."""

import subprocess
import sys

import numpy as np
import pytest

from launcher.demo import digits_data
from tests.helpers import packrun_env

pytestmark = pytest.mark.unit


def test_the_digits_equal_scikit_learns(monkeypatch):
    from sklearn.datasets import load_digits
    d = load_digits()
    want = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8), d.target.astype(int)
    assert digits_data.digits_file() is not None  # the fast path is the one under test
    images, labels = digits_data.load_digits()
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    np.testing.assert_array_equal(images, want[0])
    np.testing.assert_array_equal(labels, want[1])
    monkeypatch.setattr(digits_data, "digits_file", lambda: None)  # the file moved: through it
    for got, expected in zip(digits_data.load_digits(), want):
        np.testing.assert_array_equal(got, expected)


def test_reading_them_imports_no_scikit_learn():
    code = ("import sys; from launcher.demo.digits_data import load_digits; "
            "images, labels = load_digits(); assert len(images) == 1797; "
            "assert 'sklearn' not in sys.modules, 'sklearn imported'")
    r = subprocess.run([sys.executable, "-c", code], env=packrun_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
