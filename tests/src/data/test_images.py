"""A truncated JPEG found while training (src/data/images.py): MindSpore's
RandomCropDecodeResize dies of SIGFPE on a JPEG that ends before its image data, which read as a
crash (exit 136) and was retried; the data pipeline now refuses such a file first, and the
worker exits 2 naming it, which no restart loop retries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.data.images import BadImage, bad_image_in, jpeg_problem
from tests.helpers import REPO, packrun, shown, write_tiny_job


def cut(data: bytes, n: int) -> bytes:
    return data[:n]


def markers(data: bytes) -> tuple[int, int]:
    """(end of the frame header, end of the scan header)."""
    sof = data.find(b"\xff\xc0")
    sos = data.find(b"\xff\xda")
    return sof + 2 + int.from_bytes(data[sof + 2:sof + 4], "big"), \
        sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")


@pytest.fixture
def jpeg(digits_2class) -> bytes:
    return next((digits_2class / "train" / "digit_0").iterdir()).read_bytes()


@pytest.mark.unit
def test_a_jpeg_cut_before_its_image_data_is_named_and_a_whole_one_is_not(jpeg):
    frame_end, scan_end = markers(jpeg)
    assert jpeg_problem(memoryview(jpeg)) is None
    assert jpeg_problem(b"not a jpeg at all") is None  # the decoder's to refuse
    for n in (frame_end, frame_end + 5, scan_end - 2, scan_end):
        assert "is truncated" in jpeg_problem(cut(jpeg, n)), n
    assert jpeg_problem(cut(jpeg, scan_end + 10)) is None  # cut inside the data: no crash
    assert "without image data" in jpeg_problem(cut(jpeg, frame_end) + b"\xff\xd9")


@pytest.mark.unit
def test_the_bad_image_is_found_inside_the_pipelines_error():
    wrapped = RuntimeError("Exception thrown from user defined Python function in dataset.\n"
                           "Traceback (most recent call last):\n  ...\n"
                           "BadImage: image /d/x.jpg is truncated (9 bytes); replace or delete "
                           "it\n\n- Dataset Pipeline Error Message:")
    assert bad_image_in(wrapped) == "image /d/x.jpg is truncated (9 bytes); replace or delete it"
    assert bad_image_in(BadImage("image y")) == "image y"
    nested = ("Traceback (most recent call last):\n  File x\nsrc.data.images.BadImage: Traceback "
              "(most recent call last):\n  File y\nsrc.data.images.BadImage: image z\n")
    assert bad_image_in(BadImage(nested)) == "image z"
    assert bad_image_in(RuntimeError("other")) is None


@pytest.mark.e2e
def test_every_cut_that_kills_the_decoder_is_refused(jpeg, tmp_path):
    """Cuts of the file before, in and after the header of its image data: each one that kills
    MindSpore's decoder (SIGFPE; run in a child) is refused by the check, and the cut before the
    image data does kill it (the crash the check exists for)."""
    frame_end, scan_end = markers(jpeg)
    cuts = [frame_end, jpeg.find(b"\xff\xda") + 2, scan_end + 20]
    program = ("import sys, numpy as np, mindspore.dataset.vision as v\n"
               "a = np.fromfile(sys.argv[1], dtype=np.uint8)\n"
               "try:\n    v.RandomCropDecodeResize(32)(a)\nexcept Exception:\n    pass\n")
    crashed = {}
    for n in cuts:
        (tmp_path / f"c{n}.jpg").write_bytes(cut(jpeg, n))
        r = subprocess.run([sys.executable, "-c", program, str(tmp_path / f"c{n}.jpg")],
                           capture_output=True, cwd=REPO, timeout=120)
        crashed[n] = r.returncode == -8
        if crashed[n]:
            assert jpeg_problem(cut(jpeg, n)) is not None, n
    assert crashed[frame_end]
    assert not crashed[scan_end + 20] and jpeg_problem(cut(jpeg, scan_end + 20)) is None


@pytest.mark.e2e
def test_a_truncated_jpeg_found_while_training_ends_the_run_with_exit_2_naming_it(
        tmp_path, data):
    """image_check = "none": nothing looks at the images before training; max_restarts would
    restart a crash, never bad input."""
    good = next((data / "train" / "digit_1").iterdir())
    frame_end, _ = markers(good.read_bytes())
    bad = data / "train" / "digit_1" / "zz_truncated.jpg"
    bad.write_bytes(cut(good.read_bytes(), frame_end))
    job = write_tiny_job(tmp_path / "bad.toml", data, image_check="none", max_restarts=2)
    r = packrun("debug", job, timeout=600)
    assert r.returncode == 2, shown(r)
    assert f"image {bad} is truncated" in r.stdout + r.stderr, shown(r)
    run_dir = Path(next(line.split("run directory ", 1)[1] for line in r.stdout.splitlines()
                        if "run directory " in line))
    state = json.loads((run_dir / "run_state.json").read_text())
    assert state["attempt"] == 1  # not retried
