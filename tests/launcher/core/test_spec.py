"""The job spec: job file + CLI overrides -> one validated JobSpec, and job.json round trip."""

import json
import re
import tomllib
from pathlib import Path

import pytest

from launcher.core.errors import UserError
from launcher.core.rundir.job_json import spec_from_json, spec_to_json
from launcher.core.spec import (
    JobSpec,
    build_spec,
    load_job,
    reference_markdown,
)
from tests.helpers import REPO, write_job

pytestmark = pytest.mark.unit


def test_job_file_and_overrides_resolve(tiny_job):
    spec = load_job(tiny_job, {"epochs": 5, "lr": "0.5", "sink_mode": "false", "name": 2024})
    assert spec.epochs == 5 and spec.lr == 0.5 and spec.sink_mode is False
    assert spec.name == "2024"            # fire turns --name=2024 into an int
    assert spec.arch == "resnet18" and spec.momentum == 0.9  # file value, then default
    assert Path(spec.train_dir).is_absolute()


def test_relative_paths_resolve_against_the_working_directory(tmp_path, digits_2class,
                                                              monkeypatch):
    monkeypatch.chdir(digits_2class)
    job = write_job(tmp_path / "j.toml", train_dir="train", val_dir="val", num_classes=2)
    spec = load_job(job)
    assert spec.train_dir == str(digits_2class / "train")


def test_job_json_round_trip(tiny_job, tmp_path):
    spec = load_job(tiny_job)
    (tmp_path / "job.json").write_text(spec_to_json(spec))
    assert spec_from_json(tmp_path) == spec
    assert json.loads((tmp_path / "job.json").read_text())["spec"]["arch"] == "resnet18"


@pytest.mark.parametrize("keys, overrides, expect", [
    ({"epochs": "20"}, {}, "key 'epochs' must be an integer, got str '20'"),
    ({"sink_mode": 1}, {}, "key 'sink_mode' must be true or false"),
    ({"epocs": 3}, {}, "unknown key 'epocs' (did you mean 'epochs'?)"),
    ({}, {"batchsize": 3}, "unknown flag --batchsize (did you mean 'batch_size'?)"),
    ({"learning_rate": 0.1}, {}, "unknown key 'learning_rate' (did you mean 'lr'?)"),
    ({"mode": "frozen"}, {}, "key 'mode' is 'frozen'; choose one of 'finetune', 'fixed_feature'"),
    ({"epochs": 0}, {}, "key 'epochs' is 0; it must be >= 1"),
    ({}, {"lr": "fast"}, "command line: key 'lr' must be a number"),
    ({"eval_start_epoch": 30}, {}, "eval_start_epoch (30) is after the last epoch"),
    ({"arch": "vgg16"}, {}, "key 'arch' is 'vgg16'; choose one of"),
    ({"device": "TPU"}, {}, "key 'device' is 'TPU'"),
    ({"name": "a/b"}, {}, ("key 'name' is 'a/b': the character '/' is not allowed; it names "
     "the run directory")),
])
def test_bad_values_name_the_key(tiny_job, keys, overrides, expect):
    text = tiny_job.read_text() + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    lines = {}
    for line in text.splitlines():  # later keys replace earlier ones (TOML forbids duplicates)
        lines[line.split("=")[0].strip()] = line
    tiny_job.write_text("\n".join(lines.values()) + "\n")
    with pytest.raises(UserError) as e:
        load_job(tiny_job, overrides)
    assert expect in str(e.value)


def test_missing_paths_name_key_and_path(tiny_job, tmp_path):
    with pytest.raises(UserError, match=r"key 'train_dir': .*nowhere does not exist"):
        load_job(tiny_job, {"train_dir": str(tmp_path / "nowhere")})
    with pytest.raises(UserError, match=r"key 'pretrained': .*missing.ckpt does not exist"):
        load_job(tiny_job, {"pretrained": str(tmp_path / "missing.ckpt")})


def test_required_keys(tmp_path):
    job = write_job(tmp_path / "j.toml", num_classes=2)
    with pytest.raises(UserError, match="key 'train_dir' is required"):
        load_job(job)


def test_job_file_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match=r"job file .*nope.toml not found"):
        load_job(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = \n")
    with pytest.raises(UserError, match=re.escape("bad.toml: not valid TOML")):
        load_job(bad)
    nested = tmp_path / "nested.toml"
    nested.write_text("[train]\nepochs = 3\n")
    with pytest.raises(UserError, match=r"\[train\] is a table; job files use flat keys"):
        load_job(nested)


def test_every_key_is_documented():
    ref = reference_markdown()
    for name, f in JobSpec.fields().items():
        assert f"`{name}`" in ref and f.metadata["doc"]


# jobs/*.toml: (name, arch, num_classes, mode, device) as each file sets them
SHIPPED_JOBS = {
    "canidae_finetune.toml": ("canidae_finetune", "resnet50", 2, "finetune", "Ascend"),
    "canidae_fixed_feature.toml": ("canidae_fixed_feature", "resnet50", 2, "fixed_feature",
                                   "Ascend"),
    "demo.toml": ("demo_finetune", "resnet18", 2, "finetune", "CPU"),
    "demo_source.toml": ("demo_source", "resnet18", 8, "finetune", "CPU"),
}


def test_shipped_job_files_parse_to_what_they_say(tmp_path):
    """Every job file in jobs/ is a valid job (its data need not exist here) whose spec holds
    each key as the file writes it, relative paths resolved against the working directory."""
    assert sorted(p.name for p in (REPO / "jobs").glob("*.toml")) == sorted(SHIPPED_JOBS)
    for name, (job_name, arch, num_classes, mode, device) in SHIPPED_JOBS.items():
        job = REPO / "jobs" / name
        keys = tomllib.loads(job.read_text())
        spec = build_spec(keys, source=str(job), base_dir=tmp_path, check_paths=False)
        assert (spec.name, spec.arch, spec.num_classes, spec.mode, spec.device) == \
            (job_name, arch, num_classes, mode, device), name
        paths = {k for k, f in JobSpec.fields().items() if f.metadata["path"]}
        for key, value in keys.items():
            expected = str(tmp_path / value) if key in paths and value else value
            assert getattr(spec, key) == expected, f"{name}: {key}"
