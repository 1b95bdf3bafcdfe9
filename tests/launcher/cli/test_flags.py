"""Issue 15's silently-wrong and crash cases that are not a one-shot CLI error: flag values as
typed, seeds of any size, a full disk while saving."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from launcher.cli.flags import keep_text
from launcher.core.errors import UserError
from tests.helpers import packrun, small_job


@pytest.mark.unit
@pytest.mark.parametrize("typed", ["20240101_1", "1.10", "1e3", "0x10", "007", "[1, 2]",
                                   "None", "True", "{'a': 1}"])
def test_string_keys_keep_the_text_as_typed(typed, data, tmp_path):
    job = small_job(tmp_path, data)
    r = packrun("render", job, "--print", f"--name={typed}", timeout=120)
    if any(c in typed for c in "[]{}' ,"):  # not a valid name: refused, naming it as typed
        assert r.returncode == 2 and f"key 'name' is {typed!r}" in r.stderr, r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert f'"name": "{typed}"' in r.stdout
    assert f"/{typed}-YYYYmmdd-HHMMSS/job.json" in r.stdout


@pytest.mark.unit
def test_keep_text_touches_only_text_and_number_job_keys():
    assert keep_text(["run", "j.toml", "--name=1.10", "--epochs", "3", "--hflip=false",
                      "--env_setup=['a']", "--workers=2", "--resume", "x"]) == \
        ["run", "j.toml", "--name='1.10'", "--epochs", "'3'", "--hflip=false",
         "--env_setup=['a']", "--workers=2", "--resume", "x"]
    assert keep_text(["--master-addr=1e3"]) == ["--master-addr='1e3'"]


@pytest.mark.unit
def test_seeds_of_any_size_give_32_bit_streams():
    from src.training.seeds import EPOCH, UINT32, derived_seed, network_seed
    for seed in (0, 42949, 2 ** 32, 2 ** 63 - 1):
        for epoch in (0, 1, 10 ** 6):
            assert 0 <= derived_seed(seed, EPOCH, epoch) < UINT32
        assert 0 <= network_seed(seed) < UINT32
    assert network_seed(7) == 7  # small seeds keep their meaning for ms.set_seed
    assert derived_seed(1, EPOCH, 1) != derived_seed(1, EPOCH, 2)
    assert derived_seed(1, EPOCH, 1) == derived_seed(1, EPOCH, 1)


@pytest.mark.e2e
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import mindspore as ms

    from src.model.resnet import resnet18
    from src.training import checkpoint
    net = resnet18(2)
    best = tmp_path / "best.ckpt"
    checkpoint.save_atomic(net, best)
    before = best.read_bytes()

    def full_disk(obj, name, append_dict=None):
        Path(name).write_bytes(b"partial")  # MindSpore got this far, then the disk filled
        raise RuntimeError("Failed to save the checkpoint file: No space left on device")
    monkeypatch.setattr(ms, "save_checkpoint", full_disk)
    with pytest.raises(UserError, match=r"no space left on the device of .* while saving "
                                        r"best.ckpt \(the previous best.ckpt is kept\)"):
        checkpoint.save_atomic(net, best)
    assert best.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]  # no temporary left

    def enospc(obj, name, append_dict=None):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ms, "save_checkpoint", enospc)
    with pytest.raises(UserError, match="no space left"):
        checkpoint.save_atomic(net, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]
