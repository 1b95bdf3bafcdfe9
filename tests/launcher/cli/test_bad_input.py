"""Bad input through the real CLI: a one-line message naming the culprit, exit 2, no traceback,
and no training started. What is refused before anything starts runs the CLI's entry in the
test's process (tests/helpers.packrun_in_process); a worker's refusal, the real command."""


import mindspore as ms
import numpy as np
import pytest

from tests.helpers import packrun, packrun_in_process, small_job


def job(tmp_path, data, **extra):
    return small_job(tmp_path, data, "bad", **extra)


def corrupt_jpeg(data):
    victim = sorted((data / "val" / "digit_1").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated mid-scan
    return victim


def empty_class(data):
    (data / "train" / "digit_2").mkdir()
    return data / "train" / "digit_2"


def val_class_renamed(data):
    (data / "val" / "digit_1").rename(data / "val" / "one")
    return "only in train: digit_1; only in val: one"


CASES = {
    "missing data dir": (lambda t, d: job(t, d, train_dir=str(t / "nowhere")), [],
                         "key 'train_dir': {t}/nowhere does not exist"),
    "empty class folder": (lambda t, d: (empty_class(d), job(t, d, num_classes=3))[1], [],
                           "class folder {d}/train/digit_2 holds no images"),
    "class mismatch": (lambda t, d: (val_class_renamed(d), job(t, d))[1], [],
                       "only in train: digit_1; only in val: one"),
    "corrupt jpeg": (lambda t, d: (corrupt_jpeg(d), job(t, d))[1], [],
                     "cannot be decoded"),
    "unknown key in file": (lambda t, d: job(t, d, epoch=3), [], "unknown key 'epoch'"),
    "unknown flag": (lambda t, d: job(t, d), ["--learning_rate=0.1"],
                     "command line: unknown flag --learning_rate (did you mean 'lr'?)"),
    "wrong type": (lambda t, d: job(t, d, batch_size="8"), [],
                   "key 'batch_size' must be an integer, got str '8'"),
    "num_classes vs folders": (lambda t, d: job(t, d, num_classes=5), [],
                               "num_classes is 5 but"),
    "job file missing": (lambda t, d: t / "nope.toml", [], "job file {t}/nope.toml not found"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_exits_2_with_a_message(tmp_path, data, case):
    make, flags, expect = CASES[case]
    job_file = make(tmp_path, data)
    r = packrun_in_process("debug", job_file, *flags)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert expect.format(t=tmp_path, d=data) in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.unit
def test_corrupt_jpeg_names_the_file(tmp_path, data):
    victim = corrupt_jpeg(data)
    r = packrun_in_process("debug", job(tmp_path, data))
    assert f"image {victim} cannot be decoded" in r.stderr


@pytest.mark.e2e
def test_checkpoint_that_does_not_fit_names_the_parameter(tmp_path, data):
    from src.model.resnet import resnet18
    net = resnet18(2)
    entries = [{"name": p.name, "data": p.data} for p in net.get_parameters()]
    entries[1] = {"name": entries[1]["name"], "data": ms.Tensor(np.zeros((32,), np.float32))}
    ckpt = tmp_path / "wrong.ckpt"
    ms.save_checkpoint(entries, str(ckpt))
    r = packrun("debug", job(tmp_path, data, pretrained=str(ckpt)))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr
    out = r.stdout + r.stderr  # the worker's message comes through the streamed console output
    assert f"packrun: error: checkpoint {ckpt} does not fit the network" in out
    assert f"{entries[1]['name']}: file (32,), network (64,)" in out
