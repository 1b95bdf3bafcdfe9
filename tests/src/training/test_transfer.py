"""Transfer learning beyond two modes: `freeze` stages, the generalised feature cache,
head_lr_mult and label_smoothing (spec, network, optimizer, real runs)."""

import json
import math

import numpy as np
import pytest

from launcher.core.errors import UserError
from launcher.core.rundir.job_json import spec_from_json, spec_to_json
from launcher.core.rundir.names import TRACE_ENV
from launcher.core.spec import build_spec, load_job
from src.model.stages import cache_bytes, frozen_stages, prefix_output_shape, stage_of
from tests.helpers import INTERRUPTED_JOB, packrun, params, run_dir_of, write_job, write_tiny_job

BASE = {"train_dir": "/spec-only/train", "val_dir": "/spec-only/val"}  # (not a parent of cwd)


def spec(**values):
    return build_spec(BASE | values, check_paths=False)


# --- spec: mode and freeze ---------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("values, mode, freeze", [
    ({}, "finetune", "none"),
    ({"mode": "finetune"}, "finetune", "none"),
    ({"mode": "fixed_feature"}, "fixed_feature", "all"),
    ({"freeze": "all"}, "fixed_feature", "all"),
    ({"freeze": "none"}, "finetune", "none"),
    ({"freeze": "layer2"}, "partial", "layer2"),
    ({"freeze": "stem"}, "partial", "stem"),
    ({"mode": "partial", "freeze": "layer3"}, "partial", "layer3"),
    ({"mode": "fixed_feature", "freeze": "all"}, "fixed_feature", "all"),
    ({"mode": "finetune", "freeze": "none"}, "finetune", "none"),
])
def test_mode_and_freeze_resolve_to_one_answer(values, mode, freeze):
    s = spec(**values)
    assert (s.mode, s.freeze) == (mode, freeze)
    again = spec_from_json_text(spec_to_json(s))  # job.json holds both and reads back
    assert (again.mode, again.freeze) == (mode, freeze)


def spec_from_json_text(text):
    return build_spec(json.loads(text)["spec"], check_paths=False)


@pytest.mark.unit
@pytest.mark.parametrize("values, message", [
    ({"mode": "finetune", "freeze": "layer2"},
     "mode = 'finetune' and freeze = 'layer2' disagree (freeze = 'layer2' is mode 'partial')"),
    ({"mode": "fixed_feature", "freeze": "layer3"}, "disagree"),
    ({"mode": "finetune", "freeze": "all"}, "disagree"),
    ({"mode": "partial"}, "mode = \"partial\" needs freeze = \"stem\""),
    ({"mode": "partial", "freeze": "none"}, "disagree"),
    ({"freeze": "layer4"}, "key 'freeze' is 'layer4'; choose one of 'none', 'stem', 'layer1'"),
    ({"label_smoothing": 1.0}, "key 'label_smoothing' is 1.0; it must be below 1"),
    ({"label_smoothing": -0.1}, "key 'label_smoothing' is -0.1; it must be >= 0"),
    ({"head_lr_mult": -1.0}, "key 'head_lr_mult' is -1.0; it must be >= 0"),
    ({"cache_max_gib": -1}, "key 'cache_max_gib' is -1.0; it must be >= 0"),
])
def test_inconsistent_or_bad_transfer_keys_are_errors(values, message):
    with pytest.raises(UserError) as e:
        spec(**values)
    assert message in str(e.value)


@pytest.mark.unit
def test_a_command_line_freeze_replaces_the_job_files_mode_and_back(tmp_path):
    job = write_job(tmp_path / "j.toml", mode="finetune", **BASE)
    assert load_job(job, {"freeze": "layer2"}, check_paths=False).mode == "partial"
    job2 = write_job(tmp_path / "k.toml", freeze="layer1", **BASE)
    s = load_job(job2, {"mode": "fixed_feature"}, check_paths=False)
    assert (s.mode, s.freeze) == ("fixed_feature", "all")
    with pytest.raises(UserError, match=r"^command line: mode = 'finetune' and freeze = 'all'"):
        load_job(job2, {"mode": "finetune", "freeze": "all"}, check_paths=False)
    bad = write_job(tmp_path / "bad.toml", mode="finetune", freeze="layer2", **BASE)
    with pytest.raises(UserError, match=r"bad\.toml: mode = 'finetune' and freeze = 'layer2'"):
        load_job(bad, {}, check_paths=False)
    # replace(): a changed mode takes its freeze along
    assert spec(freeze="layer2").replace(mode="fixed_feature").freeze == "all"
    assert spec(freeze="layer2").replace(epochs=3).freeze == "layer2"


@pytest.mark.unit
def test_new_keys_reach_job_json_with_their_defaults():
    doc = json.loads(spec_to_json(spec()))["spec"]
    assert doc["freeze"] == "none" and doc["head_lr_mult"] == 1.0
    assert doc["label_smoothing"] == 0.0 and doc["cache_max_gib"] == 4.0
    doc = json.loads(spec_to_json(spec(head_lr_mult=10, label_smoothing=0.1)))["spec"]
    assert doc["head_lr_mult"] == 10.0 and doc["label_smoothing"] == 0.1


@pytest.mark.unit
def test_inconsistent_job_exits_2_with_one_line(tmp_path, digits_2class):
    job = write_job(tmp_path / "j.toml", mode="fixed_feature", freeze="layer2",
                    train_dir=str(digits_2class / "train"), val_dir=str(digits_2class / "val"),
                    num_classes=2)
    r = packrun("render", job, "--print")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        (f"packrun: error: {job}: mode = 'fixed_feature' and freeze = 'layer2' disagree "
         "(freeze = 'layer2' is mode 'partial'); set only one of them")]


# --- stages (pure) ------------------------------------------------------------------------------

@pytest.mark.unit
def test_stages_up_to_and_including():
    assert frozen_stages("none") == ()
    assert frozen_stages("stem") == ("stem",)
    assert frozen_stages("layer2") == ("stem", "layer1", "layer2")
    assert frozen_stages("all") == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert stage_of("conv1.weight", "end_point") == "stem"
    assert stage_of("bn1.moving_mean", "end_point") == "stem"
    assert stage_of("layer3.1.bn2d.gamma", "end_point") == "layer3"
    assert stage_of("end_point.bias", "end_point") == "head"


@pytest.mark.unit
def test_cache_size_is_stated_from_the_prefix_output():
    assert prefix_output_shape("resnet50", "layer2", 224) == (512, 28, 28)
    assert prefix_output_shape("resnet50", "all", 224) == (2048,)
    assert prefix_output_shape("resnet18", "stem", 224) == (64, 56, 56)
    # 1000 train images x 2 views + 100 val of 512x28x28 float32
    assert cache_bytes("resnet50", "layer2", 224, 1000, 2, 100) == 2100 * 512 * 28 * 28 * 4


# --- network and optimizer (in-process MindSpore) ----------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_prefix_output_shapes_match_the_network(arch):
    import mindspore as ms

    from src.model.resnet import build_resnet
    from src.training.feature_cache import Prefix
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    net = build_resnet(arch, 2, cpu_conv=False)
    x = ms.Tensor(np.zeros((1, 3, 37, 37), np.float32))
    for freeze in ("stem", "layer1", "layer2", "layer3", "all"):
        assert Prefix(net, freeze)(x).shape[1:] == prefix_output_shape(arch, freeze, 37), freeze


@pytest.mark.e2e
@pytest.mark.parametrize("freeze, trains", [
    ("none", ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
    ("stem", ["layer1", "layer2", "layer3", "layer4", "head"]),
    ("layer2", ["layer3", "layer4", "head"]),
    ("layer3", ["layer4", "head"]),
    ("all", ["head"]),
])
def test_apply_freeze_reports_what_trains_by_stage(freeze, trains):
    from mindspore import nn

    from src.model.resnet import build_resnet
    from src.training.transfer import apply_freeze
    net = build_resnet("resnet18", 2, cpu_conv=False)
    report = apply_freeze(net, freeze, "end_point")
    assert [s.stage for s in report.stages if s.trains] == trains
    assert sorted(report.names) == sorted(p.name for p in net.trainable_params())
    summary = report.summary()
    assert f"freeze = {freeze!r}: {len(report.names)} of 62 parameters train" in summary
    assert "  head    trains    2 parameter(s), 1026 values: end_point.weight, end_point.bias" \
        in summary
    for s in report.stages:
        assert (f"  {s.stage:<7} {'trains' if s.trains else 'frozen'}") in summary
    stages = {"conv1": "stem", "bn1": "stem"}
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            stage = stages.get(name, name.split(".")[0])
            assert (cell.use_batch_statistics is not False) == (stage in trains), name


def _one_step(head_lr_mult, freeze="layer3"):
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore import nn
    from mindspore.train import Model

    from src.model.resnet import build_resnet
    from src.training.transfer import apply_freeze, loss_fn, parameter_groups
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    ms.set_seed(3)
    net = build_resnet("resnet18", 2, cpu_conv=False)
    apply_freeze(net, freeze, "end_point")
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    opt = nn.Momentum(parameter_groups(net, "end_point", 0.1, head_lr_mult), learning_rate=0.1,
                      momentum=0.9)
    rng = np.random.default_rng(0)
    data = ds.NumpySlicesDataset((rng.standard_normal((4, 3, 32, 32)).astype(np.float32),
                                  np.array([0, 1, 0, 1], np.int32)),
                                 column_names=["image", "label"], shuffle=False).batch(4)
    Model(net, loss_fn(0.0), opt).train(1, data, dataset_sink_mode=False)
    return {p.name: p.asnumpy() - before[p.name] for p in net.get_parameters()}


@pytest.mark.e2e
def test_head_lr_mult_scales_only_the_heads_step():
    base, tripled, zero = _one_step(1.0), _one_step(3.0), _one_step(0.0)
    head, body = "end_point.weight", "layer4.0.conv1.weight"
    assert np.abs(base[head]).max() > 0 and np.abs(base[body]).max() > 0
    np.testing.assert_allclose(tripled[head], 3 * base[head], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(tripled[body], base[body], rtol=1e-5, atol=1e-8)
    assert not np.any(zero[head]) and np.abs(zero[body]).max() > 0
    assert not np.any(base["layer3.0.conv1.weight"])  # frozen


@pytest.mark.e2e
def test_label_smoothing_is_the_smoothed_cross_entropy():
    import mindspore as ms

    from src.training.transfer import loss_fn
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 2], np.int32)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    for eps in (0.0, 0.1, 0.5):
        target = np.full_like(logits, eps / 3)
        target[np.arange(2), labels] += 1 - eps
        expected = float(-(target * logp).sum(axis=1).mean())
        got = float(loss_fn(eps)(ms.Tensor(logits), ms.Tensor(labels)).asnumpy())
        assert math.isclose(got, expected, rel_tol=1e-5), eps


# --- real runs ---------------------------------------------------------------------------------

# (pytest-xdist builds a module fixture once per worker that runs a test using it. The tests
# that share `layer2_runs` (two training runs) are one xdist group, so that README's `-n 3
# --dist loadgroup` builds it once. `pretrained` is a run the session trains once anyway.)
SHARES_LAYER2_RUNS = pytest.mark.xdist_group("transfer_layer2_runs")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("transferjobs")
    write_tiny_job(d / "tiny.toml", digits_2class, epochs=2, lr=0.02)
    return d


@pytest.fixture(scope="module")
def pretrained(reference_run):
    """best.ckpt of a tiny resnet18 run on the same digits: the uninterrupted debug run of
    test_restarts (conftest reference_run), trained once per session."""
    return reference_run("debug", env_extra={TRACE_ENV: "1"}, **INTERRUPTED_JOB) / "best.ckpt"


@pytest.fixture(scope="module")
def layer2_runs(jobs, pretrained):
    """freeze = "layer2", cached (default) and recomputed (cache_max_gib = 0)."""
    out = {}
    for name, extra in (("cached", []), ("recomputed", ["--cache_max_gib=0"])):
        r = packrun("debug", jobs / "tiny.toml", "--freeze=layer2", f"--pretrained={pretrained}",
                    f"--name=layer2_{name}", "--head_lr_mult=2", "--label_smoothing=0.1", *extra)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        out[name] = (r, run_dir_of(r))
    return out


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.e2e
@SHARES_LAYER2_RUNS
def test_freeze_layer2_changes_exactly_layer3_layer4_and_the_head(layer2_runs, pretrained):
    result, run_dir = layer2_runs["cached"]
    before, after = params(pretrained), params(run_dir / "best.ckpt")
    changed = {k for k in after if not np.array_equal(before[k], after[k])}
    stats = ("moving_mean", "moving_variance")
    trained = {k for k in after if k.split(".")[0] in ("layer3", "layer4", "end_point")}
    # nothing before layer3 moved; every trainable weight of layer3, layer4 and the head did
    assert changed <= trained
    assert {k for k in trained if not k.endswith(stats)} <= changed
    frozen_bn = [k for k in after if k.endswith(stats)
                 and k.split(".")[0] in ("bn1", "layer1", "layer2")]
    assert frozen_bn and all(np.array_equal(before[k], after[k]) for k in frozen_bn)
    assert any(k.endswith("moving_mean") and k.startswith("layer4") for k in changed)
    out = result.stdout
    assert "freeze = 'layer2': 32 of 62 parameters train" in out
    assert "BatchNorm statistics of stem..layer2 fixed" in out
    assert "  layer2  frozen   15 parameter(s)" in out
    assert "  layer3  trains   15 parameter(s)" in out
    assert "lr 0.02 (head x 2), label smoothing 0.1" in out
    s = spec_from_json(run_dir)
    assert (s.freeze, s.mode, s.head_lr_mult, s.label_smoothing) == ("layer2", "partial", 2.0, 0.1)


@pytest.mark.e2e
@SHARES_LAYER2_RUNS
def test_partial_freeze_cache_equals_recomputing(layer2_runs):
    (cached_out, cached), (recomputed_out, recomputed) = layer2_runs["cached"], \
        layer2_runs["recomputed"]
    assert ("feature cache: will hold stem..layer2 output 128x4x4 float32 per image: 48 train "
            "images x 1 eval view(s) + 16 val images = 512.0 KiB (cache_max_gib = 4)"
            in cached_out.stdout)
    assert "note: feature cache would hold stem..layer2 output 128x4x4" in recomputed_out.stdout
    assert "over cache_max_gib = 0; recomputing the frozen prefix every step" in \
        recomputed_out.stdout
    assert "feature cache: will hold" not in recomputed_out.stdout
    a, b = _metrics(cached), _metrics(recomputed)
    assert [r["val_acc"] for r in a] == [r["val_acc"] for r in b]
    for ra, rb in zip(a, b):
        assert math.isclose(ra["train_loss"], rb["train_loss"], rel_tol=1e-4, abs_tol=1e-6)
    wa, wb = params(cached / "last.ckpt"), params(recomputed / "last.ckpt")
    assert set(wa) == set(wb)
    for k in wa:
        # with and without the cache the same sums run in another order (the native BatchNorm
        # kernels split them over threads): CI saw a moving variance 1.26e-4 relative apart and
        # near-zero momenta 2e-5 apart, so the bound is relative to each tensor's scale
        scale = float(np.abs(wa[k]).max()) if wa[k].size else 0.0
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-3, atol=1e-3 * scale + 1e-7, err_msg=k)


@pytest.mark.e2e
def test_check_says_what_trains_and_what_the_cache_holds(jobs, pretrained):
    r = packrun("check", jobs / "tiny.toml", "--freeze=layer3", f"--pretrained={pretrained}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok      trainable: freeze = 'layer3': 17 of 62 parameters train" in r.stdout
    assert "ok      trainable: layer3  frozen   15 parameter(s)" in r.stdout
    assert "ok      trainable: layer4  trains   15 parameter(s)" in r.stdout
    assert "ok      cache: the feature cache will hold 48 train images x 1 view(s) + 16 val " \
        "images per worker = 256.0 KiB (cache_max_gib = 4)" in r.stdout
    r = packrun("check", jobs / "tiny.toml", "--freeze=stem", "--cache_max_gib=0", "--quick=false")
    assert "warning trainable: freeze = 'stem' with pretrained = \"\"" in r.stdout
    assert "warning cache: the feature cache would hold" in r.stdout
    assert "over cache_max_gib = 0: the worker will recompute" in r.stdout


@pytest.mark.e2e
def test_two_workers_with_a_partial_freeze_end_identical(jobs, pretrained):
    """msrun, 2 CPU workers, freeze = "layer2" on cached activations (each rank caches its
    shard): the ranks end with the same weights and BatchNorm statistics."""
    r = packrun("run", jobs / "tiny.toml", "--workers=2", "--freeze=layer2",
                f"--pretrained={pretrained}", "--name=dp_layer2", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = run_dir_of(r)
    assert "feature cache: will hold stem..layer2 output 128x4x4 float32 per image: 24 train " \
        "images" in (run_dir / "logs" / "worker_0.log").read_text()
    digests = set()
    for rank in (0, 1):
        log = (run_dir / "logs" / f"worker_{rank}.log").read_text()
        [line] = [l for l in log.splitlines() if l.startswith(f"rank {rank}: final weights")]
        digests.add(line.split(": ", 1)[1])
    assert len(digests) == 1, digests
