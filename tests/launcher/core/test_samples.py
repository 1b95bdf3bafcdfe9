"""One rule decides which files are samples (launcher/core/samples.py): the preflight and the
dataset read the same list, and what is not read is reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.core.errors import Interrupted
from launcher.core.samples import scan_split
from launcher.core.spec import load_job
from launcher.preflight import data as preflight
from tests.helpers import REPO, packrun_in_process, small_job


def odd_entries(d: Path, t: Path) -> None:
    """Every kind of entry a class folder can hold that is not a plain image."""
    c0, c1 = d / "train" / "digit_0", d / "train" / "digit_1"
    img = next(c0.iterdir())
    (d / "train" / ".ipynb_checkpoints").mkdir()
    shutil.copy(img, d / "train" / ".ipynb_checkpoints" / "copy.jpg")   # hidden folder
    shutil.copy(img, c0 / "upper.JPG")                                    # used
    shutil.copy(img, c0 / "mixed.Jpg")                                    # used
    shutil.copy(img, c0 / ".hidden.jpg")                                  # hidden file
    (c0 / "README.txt").write_text("notes")                              # other extension
    (c0 / "folder.jpg").mkdir()                                           # a folder
    shutil.copy(img, c0 / "folder.jpg" / "inner.jpg")
    (c0 / "dangling.jpg").symlink_to(t / "nowhere.jpg")                   # broken symlink
    os.mkfifo(c1 / "pipe.jpg")                                            # named pipe
    (c1 / "link.jpg").symlink_to(img)                                     # used (to a file)


@pytest.mark.unit
def test_the_rule(data, tmp_path):
    odd_entries(data, tmp_path)
    split = scan_split(data / "train")
    assert sorted(split.classes) == ["digit_0", "digit_1"]
    names = {p.name for files in split.classes.values() for p in files}
    assert {"upper.JPG", "mixed.Jpg", "link.jpg"} <= names
    assert not names & {".hidden.jpg", "README.txt", "folder.jpg", "dangling.jpg", "pipe.jpg",
                        "copy.jpg", "inner.jpg"}
    skipped = {p.name: why for p, why in split.skipped}
    assert skipped == {".hidden.jpg": "hidden", "README.txt": skipped["README.txt"],
                       "folder.jpg": "a folder (sub-folders of a class are not searched)",
                       "dangling.jpg": "a broken symlink", "pipe.jpg": "a named pipe, not a file"}
    assert skipped["README.txt"].startswith("not an image")


@pytest.mark.unit
def test_check_reports_what_is_not_read(data, tmp_path):
    odd_entries(data, tmp_path)
    job = small_job(tmp_path, data)
    r = packrun_in_process("check", job, "--quick")
    assert r.returncode == 0, r.stderr
    assert "warning data: train_dir: 5 entries in class folders are not read: " in r.stdout
    assert "dangling.jpg (a broken symlink)" in r.stdout or "and 2 more" in r.stdout
    # 24 + 2 (.JPG, .Jpg) + 24 + 1 (symlink): hidden folder and the rest are not counted
    assert "51 train / 16 val images in 2 classes" in r.stdout


@pytest.mark.unit
def test_ctrl_c_during_the_scan_is_a_clean_interruption(data, tmp_path, monkeypatch):
    """Not bad input (exit 2, never retried): an Interrupted, which every entry point ends with
    exit 130 (tests/launcher/cli/test_ctrl_c.py), naming what it interrupted; `check` stops
    there instead of reporting it as one more error."""
    def interrupt(path):
        raise KeyboardInterrupt
    monkeypatch.setattr(preflight, "decode_error", interrupt)
    spec = load_job(small_job(tmp_path, data, image_check="all"))
    with pytest.raises(Interrupted, match=r"interrupted \(Ctrl-C\) while checking the data; "
                                          "nothing was started"):
        preflight.preflight(spec)
    from launcher.preflight import checks as check
    with pytest.raises(Interrupted):
        list(check.findings(spec, check.Options(images="all"), network=False))


@pytest.mark.unit
def test_fixed_feature_without_pretrained_warns_loudly(data, tmp_path, capsys):
    job = small_job(tmp_path, data, mode="fixed_feature")
    r = packrun_in_process("check", job, "--quick")
    assert "warning job: mode = \"fixed_feature\" with pretrained = \"\": the backbone stays " \
           "at its RANDOM initial weights" in r.stdout
    preflight.preflight(load_job(job))
    assert capsys.readouterr().err.startswith("packrun: WARNING: mode = \"fixed_feature\"")


@pytest.mark.e2e
def test_the_dataset_reads_exactly_what_the_preflight_counts(data, tmp_path):
    """MindSpore's side: the dataset holds the preflight's samples, odd entries and all (no
    hang on the pipe, no 'Sample ID out of bound' from the hidden folder)."""
    odd_entries(data, tmp_path)
    code = f"""
import sys
from launcher.preflight.data import scan
from src.data import dataset
train = {str(data / 'train')!r}
classes = dataset.class_names(train)
n = dataset.count_images(train)
assert n == scan('train_dir', train).count() == 51, n
d = dataset.create_dataset(train, classes, 32, 10, training=False, num_parallel_workers=2)
labels = [int(x) for _, lb in d.create_tuple_iterator(num_epochs=1) for x in lb.asnumpy()]
assert len(labels) == 51 and labels.count(0) == 26, labels
d = dataset.create_dataset(train, classes, 32, 8, training=True, indices=list(range(51)),
                           num_parallel_workers=2)
assert sum(1 for _ in d.create_tuple_iterator(num_epochs=1)) == 51 // 8
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.stdout.strip().endswith("ok"), r.stdout + r.stderr[-3000:]
