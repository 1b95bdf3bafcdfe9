"""`packrun check`: every check's findings, the pure checkpoint fit, the sizes behind the disk
estimate, and the cheap part that `packrun run` runs first."""

import re
import shutil
import socket
from types import SimpleNamespace

import mindspore as ms
import pytest

from launcher.core.errors import UserError
from launcher.core.rundir.names import COMPILE_CACHE_DIR_ENV, COMPILE_CACHE_MAX_ENV
from launcher.core.spec import load_job
from launcher.preflight import checks as check
from launcher.preflight import data as preflight
from launcher.preflight.checks import ERROR, OK, WARNING, Finding, Options
from src.model.resnet import ARCHS
from src.training.checkpoint import check_fit
from tests.helpers import packrun, packrun_in_process, resnet18_ckpt, shown, small_job


def job(tmp_path, data, **extra):
    return small_job(tmp_path, data, "chk", **extra)


def findings_of(topic, spec, opts) -> list[Finding]:
    return [f for f in check.findings(spec, opts, network=False) if f.topic == topic]


# --- the pure parts ----------------------------------------------------------------------------

@pytest.mark.unit
def test_check_fit_drops_the_head_and_names_mismatches_and_gaps():
    net = {"conv.weight": (8, 3, 3, 3), "bn.moving_mean": (8,), "head.weight": (2, 8),
           "head.bias": (2,)}
    heads = ["head.weight", "head.bias"]
    good = {"conv.weight": (8, 3, 3, 3), "bn.moving_mean": (8,), "head.weight": (1001, 8),
            "head.bias": (1001,), "moments.head.weight": (1001, 8), "moments.conv.weight":
            (8, 3, 3, 3), "epoch_num": ()}
    fit = check_fit(good, net, heads)
    assert fit.loaded == ["conv.weight", "bn.moving_mean"]
    assert fit.missing == heads and fit.backbone_missing == []
    assert fit.unused == ["moments.conv.weight", "epoch_num"]
    assert fit.problems("x.ckpt") == []
    bad = {"conv.weight": (8, 3, 7, 7), "head.weight": (2, 8)}
    fit = check_fit(bad, net, heads)
    assert fit.problems("x.ckpt", "resnet18") == [
        ("checkpoint x.ckpt does not fit the network (arch = 'resnet18'): 1 shape mismatch(es), "
         "first: conv.weight: file (8, 3, 7, 7), network (8, 3, 3, 3). Is the checkpoint for "
         "another arch?"),
        ("checkpoint x.ckpt lacks 1 backbone parameter(s) of the network (arch = 'resnet18'), "
         "first: bn.moving_mean. Use a checkpoint of the same arch, or pretrained = \"\" to train "
         "from scratch")]


@pytest.mark.e2e
@pytest.mark.parametrize("arch", sorted(check.ARCH_SIZES))
def test_arch_sizes_are_those_of_the_networks(arch):
    net = ARCHS[arch](3)
    backbone, features = check.ARCH_SIZES[arch]
    assert net.end_point.weight.shape == (3, features)
    assert sum(p.size for p in net.get_parameters()) == backbone + (features + 1) * 3


@pytest.mark.unit
def test_checkpoint_estimate_matches_the_files_a_run_writes(tmp_path, make_job):
    """best.ckpt + 2 x last.ckpt (the old one and its replacement while it is saved)."""
    from mindspore import nn

    from src.train import resumable_parameters
    net = ARCHS["resnet18"](2)
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    ms.save_checkpoint(net, str(tmp_path / "best.ckpt"))
    ms.save_checkpoint(resumable_parameters(net, opt), str(tmp_path / "last.ckpt"))
    actual = sum((tmp_path / f).stat().st_size * n for f, n in (("best.ckpt", 1), ("last.ckpt", 2)))
    spec = load_job(make_job(arch="resnet18", num_classes=2))
    assert abs(check.checkpoint_bytes(spec) - actual) / actual < 0.01


# --- findings, in process -------------------------------------------------------------------------

@pytest.mark.unit
def test_devices_against_the_cards_this_machine_shows(tmp_path, make_job):
    dev = tmp_path / "dev"
    dev.mkdir()
    spec = load_job(make_job(device="Ascend", device_id=5, cards_per_node=8))
    [f] = check.check_devices(spec, Options(), dev)
    assert f.level == WARNING and "no Ascend cards visible here" in f.text
    for i in range(4):
        (dev / f"davinci{i}").touch()
    (dev / "davinci_manager").touch()
    assert check.visible_devices("Ascend", dev) == [0, 1, 2, 3]
    found = list(check.check_devices(spec, Options(), dev))
    assert [f.level for f in found] == [ERROR, ERROR]
    assert "device_id 5: this machine has Ascend cards 0, 1, 2, 3" in found[0].text
    assert "set cards_per_node <= 4" in found[1].text
    [f] = check.check_devices(spec.replace(device_id=3, cards_per_node=4), Options(), dev)
    assert f.level == OK
    [f] = check.check_devices(spec, Options(slurm=True), dev)  # the allocation's cards count
    assert f.level == OK


@pytest.mark.unit
def test_output_dir_that_is_a_file_or_too_small(tmp_path, make_job, monkeypatch):
    spec = load_job(make_job(arch="resnet18"))
    (tmp_path / "file").write_text("x")
    [f] = findings_of("output", spec.replace(output_dir=str(tmp_path / "file" / "runs")),
                            Options())
    assert f.level == ERROR and f"{tmp_path / 'file'} is a file" in f.text
    monkeypatch.setattr(check.shutil, "disk_usage", lambda p: SimpleNamespace(free=10 * check.MiB))
    [f] = findings_of("output", spec, Options())
    assert f.level == ERROR and "10 MiB free, a run needs about 277 MiB" in f.text
    assert "free space or set output_dir to a larger disk" in f.text


@pytest.mark.unit
def test_port(make_job):
    spec = load_job(make_job())
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        busy = spec.replace(master_port=s.getsockname()[1])
        [f] = findings_of("port", busy, Options())
        assert f.level == ERROR and "already in use" in f.text
        [f] = findings_of("port", busy, Options(slurm=True))
        assert f.level == WARNING and "not checked from here" in f.text


@pytest.mark.unit
def test_compile_cache(tmp_path, make_job, monkeypatch):
    spec = load_job(make_job())
    root = tmp_path / "cc"
    monkeypatch.setenv(COMPILE_CACHE_DIR_ENV, str(root))
    [f] = findings_of("compile cache", spec, Options())
    assert (f.level, f.text) == (OK, f"{root} (at most 2 GiB, least recently used entries go)")
    root.chmod(0o775)
    [f] = findings_of("compile cache", spec, Options())
    assert f.level == WARNING and f"not used: {root} is writable by other users" in f.text
    [f] = findings_of("compile cache", spec.replace(compile_cache=False), Options())
    assert (f.level, f.text) == (OK, "off (compile_cache = false in the job)")
    monkeypatch.setenv(COMPILE_CACHE_MAX_ENV, "lots")
    [f] = findings_of("compile cache", spec, Options())
    assert f.level == ERROR and f"{COMPILE_CACHE_MAX_ENV}='lots' is not a size in GiB" in f.text
    with pytest.raises(UserError, match=COMPILE_CACHE_MAX_ENV):  # debug: before its run dir
        check.check_debug_run(spec)


@pytest.mark.unit
def test_tools(make_job, monkeypatch):
    spec = load_job(make_job(launcher="mpirun"))
    monkeypatch.setattr(check.shutil, "which", lambda tool: None)
    found = list(check.check_tools(spec, Options(slurm=False)))
    assert [f.level for f in found] == [OK, ERROR]
    assert "mpirun not found on PATH; install Open MPI" in found[1].text
    found = list(check.check_tools(spec.replace(launcher="msrun"), Options(slurm=True)))
    assert "sbatch not found on PATH" in found[-1].text
    monkeypatch.setattr(check.importlib.util, "find_spec", lambda name: None)
    assert "MindSpore is not installed" in next(check.check_tools(spec, Options())).text


@pytest.mark.unit
def test_a_sample_of_images_by_default_every_image_with_all(tmp_path, data):
    """250 images: the default decodes a seeded sample of 200, --all_images every one."""
    source = next((data / "train" / "digit_0").iterdir())
    for i in range(250 - 64):
        shutil.copy(source, data / "train" / "digit_0" / f"copy_{i:03d}.jpg")
    files = [f for split in preflight.check_layout(load_job(job(tmp_path, data)))
             for images in split.values() for f in images]
    unsampled = sorted(set(files) - set(preflight.images_to_scan(files, "sample", 1)))[0]
    unsampled.write_text("not an image")
    r = packrun_in_process("check", job(tmp_path, data), "--quick")
    assert r.returncode == 0, r.stderr
    assert "ok      images: a sample of 200 of 250 (--all_images decodes every one) decodes" \
        in r.stdout
    r = packrun_in_process("check", job(tmp_path, data), "--quick", "--all_images")
    assert r.returncode == 2
    assert f"error   images: image {unsampled} cannot be decoded" in r.stderr


# --- the command ---------------------------------------------------------------------------------

@pytest.mark.e2e
def test_check_of_a_good_job_prints_every_check_and_exits_0(tmp_path, data):
    ckpt = resnet18_ckpt(tmp_path / "pre.ckpt", num_classes=10)
    r = packrun("check", job(tmp_path, data, pretrained=str(ckpt)))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [l.split(":")[0].split()[1] for l in lines[:-1]] == [
        "job", "data", "images", "devices", "launch", "cores", "port", "output", "tools",
        "compile"] + \
        ["trainable"] * 7 + ["network"]  # what trains: a headline, then stem .. layer4, head
    assert re.search(r"^ok      cores: \d+ core\(s\) per rank \(rank 0: [\d,-]+\)", r.stdout, re.M)
    assert all(l.startswith("ok      ") for l in lines[:-1])
    assert f"network: checkpoint {ckpt} fits resnet18 after head filtering: 100 parameters " \
           "load, re-initialised: end_point.weight, end_point.bias" in r.stdout
    assert lines[-1] == "packrun check: 0 error(s), 0 warning(s): ready to run"
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.e2e
def test_check_lists_every_problem_at_once(tmp_path, data):
    broken = [sorted((data / "val" / c).iterdir())[0] for c in ("digit_0", "digit_1")]
    for b in broken:
        b.write_bytes(b.read_bytes()[:100])
    ckpt = resnet18_ckpt(tmp_path / "r18.ckpt")
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        r = packrun("check", job(tmp_path, data, pretrained=str(ckpt), arch="resnet34",
                                 master_port=port))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    for b in broken:
        assert f"error   images: image {b} cannot be decoded" in r.stderr
    assert f"error   port: master_port {port} is already in use" in r.stderr
    assert f"error   network: checkpoint {ckpt} lacks 80 backbone parameter(s)" in r.stderr
    assert "ok      launch:" in r.stdout and "ok      output:" in r.stdout
    assert r.stderr.splitlines()[-1].startswith("packrun check: 4 error(s)")


@pytest.mark.unit
def test_run_checks_first_and_lists_every_problem(tmp_path, data):
    victim = sorted((data / "train" / "digit_1").iterdir())[0]
    victim.write_text("not an image")
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        r = packrun_in_process("run", job(tmp_path, data, master_port=port), "--workers=2")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "packrun: error: 2 problems before launch:" in r.stderr
    assert f"images: image {victim} cannot be decoded" in r.stderr
    assert f"port: master_port {port} is already in use" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.unit
def test_check_before_launch_logs_warnings_and_passes(tmp_path, data, capsys):
    spec = load_job(job(tmp_path, data, image_check="none"))
    assert check.check_before_launch(spec) is None
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err == ("packrun: warning: images: image_check = \"none\": no image is decoded "
                        "before training; a bad file fails the run when it is read\n")


@pytest.mark.unit
def test_finding_line():
    assert str(Finding(ERROR, "port", "busy")) == "error   port: busy"


# --- a path that exists but is the wrong kind: an error, also under --quick ---------------------

def _truncated_jpeg(path, source):
    """A JPEG cut right after its frame header: its size is there, its image data is not
    (MindSpore's RandomCropDecodeResize dies of SIGFPE on it)."""
    data = source.read_bytes()
    sof = data.find(b"\xff\xc0")
    path.write_bytes(data[:sof + 4 + int.from_bytes(data[sof + 2:sof + 4], "big")])
    return path


@pytest.mark.unit
@pytest.mark.parametrize("what", ["train_dir", "pretrained", "hccn_conf"])
def test_quick_check_of_a_path_of_the_wrong_kind_is_an_error(tmp_path, data, what):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    keys = {"train_dir": dict(train_dir=str(a_file)),
            "pretrained": dict(pretrained=str(tmp_path)),
            "hccn_conf": dict(launcher="rank_table", device="Ascend", cards_per_node=2,
                              hccn_conf=str(a_file / "hccn.conf"))}[what]
    expected = {"train_dir": f"{a_file} is a file, not a directory",
                "pretrained": f"{tmp_path} is a directory, not a file",
                "hccn_conf": f"{a_file / 'hccn.conf'} lies under the file {a_file}"}[what]
    r = packrun_in_process("check", job(tmp_path, data, **keys), "--quick")
    assert r.returncode == 2, shown(r)
    assert re.search(rf"^error .*{re.escape(expected)}", r.stderr, re.M), shown(r)
    assert "Traceback" not in r.stderr
    missing = {"train_dir": dict(train_dir=str(tmp_path / "nowhere")),
               "pretrained": dict(pretrained=str(tmp_path / "none.ckpt")),
               "hccn_conf": dict(keys, hccn_conf=str(tmp_path / "no_hccn.conf"))}[what]
    r = packrun_in_process("check", job(tmp_path, data, **missing), "--quick")
    topic = "launch" if what == "hccn_conf" else "paths"
    assert re.search(rf"^warning +{topic}: ", r.stdout + r.stderr, re.M), shown(r)
    assert not re.search(rf"^error +{topic}", r.stderr, re.M), shown(r)  # missing: a warning


@pytest.mark.unit
def test_full_decode_finds_a_truncated_jpeg_before_training(tmp_path, data):
    source = next((data / "train" / "digit_0").iterdir())
    bad = _truncated_jpeg(data / "train" / "digit_1" / "truncated.jpg", source)
    r = packrun_in_process("check", job(tmp_path, data, image_check="all"), "--quick")
    assert r.returncode == 2
    assert f"error   images: image {bad} cannot be decoded" in r.stderr, shown(r)
