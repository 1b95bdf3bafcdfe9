"""Checkpoints (src/training/checkpoint.py): the tutorial's head filtering on a Model-Zoo-shaped
training checkpoint, the load report, mismatches named, freezing, and saving atomically (a full
disk keeps the previous file)."""

import errno
import json
import re
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from launcher.core.errors import UserError
from src.model.resnet import resnet18, resnet50
from src.training.checkpoint import freeze_backbone, load_pretrained, save_atomic
from tests.helpers import MODELZOO_RESNET50

pytestmark = pytest.mark.e2e  # every test builds a full ResNet (seconds of CPU each)


@pytest.fixture(scope="module")
def modelzoo_training_ckpt(tmp_path_factory):
    """What a user's resnet50.ckpt saved from Model Zoo training holds: every network parameter
    (1001-class head), `moments.<p>` for each trainable one, and scalar counters."""
    params = json.loads(MODELZOO_RESNET50.read_text())["parameters"]
    rng = np.random.default_rng(0)
    entries, values = [], {}
    for p in params:
        values[p["name"]] = rng.standard_normal(p["shape"]).astype(np.float32)
        entries.append({"name": p["name"], "data": ms.Tensor(values[p["name"]])})
    for p in params:
        if p["trainable"]:
            entries.append({"name": "moments." + p["name"],
                            "data": ms.Tensor(np.zeros(p["shape"], np.float32))})
    entries += [{"name": "epoch_num", "data": ms.Tensor(np.array([90], np.int32))},
                {"name": "step_num", "data": ms.Tensor(np.array([112590], np.int32))},
                {"name": "learning_rate", "data": ms.Tensor(np.array([0.0], np.float32))}]
    path = tmp_path_factory.mktemp("ckpt") / "resnet50.ckpt"
    ms.save_checkpoint(entries, str(path))
    return path, values


def test_head_filtering_prints_the_tutorials_lines_and_loads_the_backbone(
        modelzoo_training_ckpt, capsys):
    path, values = modelzoo_training_ckpt
    net = resnet50(2)
    report = load_pretrained(net, path, "end_point", "resnet50")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Delete parameter from checkpoint:  end_point.weight",
        "Delete parameter from checkpoint:  end_point.bias",
        "Delete parameter from checkpoint:  moments.end_point.weight",
        "Delete parameter from checkpoint:  moments.end_point.bias",
    ]
    assert report.missing == ["end_point.weight", "end_point.bias"]
    assert len(report.loaded) == 265
    assert "epoch_num" in report.unused and "step_num" in report.unused
    assert sum(n.startswith("moments.") for n in report.unused) == 161 - 2
    for p in net.get_parameters():
        if not p.name.startswith("end_point."):
            np.testing.assert_array_equal(p.asnumpy(), values[p.name], err_msg=p.name)
    assert net.end_point.weight.shape == (2, 2048)
    assert "159 optimizer moments" in report.summary()


def test_a_checkpoint_of_another_arch_names_the_parameter(modelzoo_training_ckpt):
    path, _ = modelzoo_training_ckpt
    with pytest.raises(UserError, match=r"does not fit the network \(arch = 'resnet18'\).*"
                                        r"conv1.weight|lacks .* backbone parameter"):
        load_pretrained(resnet18(2), path, "end_point", "resnet18")


def test_shape_mismatch_names_parameter_and_shapes(tmp_path):
    net = resnet18(2)
    entries = [{"name": p.name, "data": p.data} for p in net.get_parameters()]
    entries[0] = {"name": "conv1.weight", "data": ms.Tensor(np.zeros((64, 3, 3, 3), np.float32))}
    path = tmp_path / "bad.ckpt"
    ms.save_checkpoint(entries, str(path))
    with pytest.raises(UserError, match=r"conv1.weight: file \(64, 3, 3, 3\), network "
                                        r"\(64, 3, 7, 7\)"):
        load_pretrained(resnet18(2), path, "end_point")


def test_missing_backbone_parameters_are_an_error(tmp_path):
    net = resnet18(2)
    entries = [{"name": p.name, "data": p.data} for p in net.get_parameters()
               if p.name != "layer2.0.conv1.weight"]
    path = tmp_path / "partial.ckpt"
    ms.save_checkpoint(entries, str(path))
    with pytest.raises(UserError, match=r"lacks 1 backbone parameter.*layer2.0.conv1.weight"):
        load_pretrained(resnet18(2), path, "end_point")


def test_unreadable_checkpoint_and_unknown_head(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=re.escape("junk.ckpt cannot be read")):
        load_pretrained(resnet18(2), junk, "end_point")
    with pytest.raises(UserError, match=r"'fc'.*classifier cells are: end_point"):
        freeze_backbone(resnet18(2), "fc")


def test_freeze_leaves_only_the_head_trainable_and_batchnorm_fixed():
    net = resnet18(2)
    assert freeze_backbone(net, "end_point") == ["end_point.weight", "end_point.bias"]
    assert [p.name for p in net.trainable_params()] == ["end_point.weight", "end_point.bias"]
    assert net.bn1.use_batch_statistics is False


def test_save_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    net = resnet18(2)
    target = tmp_path / "best.ckpt"
    save_atomic(net, target, append_dict={"epoch": 3})
    save_atomic(net, target, append_dict={"epoch": 4})
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]
    assert int(ms.load_checkpoint(str(target))["epoch"]) == 4


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
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
