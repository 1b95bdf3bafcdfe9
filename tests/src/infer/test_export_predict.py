"""`packrun export` (MINDIR, ONNX) and `packrun predict` (run dir, MindIR, ONNX) on a real tiny
run, and their bad inputs."""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO, packrun, run_dir_of, write_tiny_job

pytestmark = pytest.mark.e2e
# (xdist: a module fixture is built once per worker that runs a test using it; the tests that
# share `run` (a training run) share one xdist group, so that `-n 3 --dist loadgroup` builds it
# once.)
SHARES_RUN = pytest.mark.xdist_group("export_predict_run")


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("exportrun")
    job = write_tiny_job(d / "tiny.toml", digits_2class, epochs=2, lr=0.02)
    r = packrun("debug", job)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run_dir_of(r)


@pytest.fixture(scope="module")
def exported(run):
    """Both formats from one `packrun export --format=MINDIR,ONNX` (one process)."""
    r = packrun("export", run, "--format=MINDIR,ONNX")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = {}
    for fmt in ("MINDIR", "ONNX"):
        path = run / f"best.{fmt.lower()}"
        assert f"as {fmt}: {path}" in r.stdout
        files[fmt] = path
    assert r.stdout.count("checked: loaded back, logits within") == 2
    return files


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@SHARES_RUN
def test_export_writes_the_model_and_its_record(run, exported):
    best = max((json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()),
               key=lambda r: (r["val_acc"], r["epoch"]))
    for fmt, path in exported.items():
        assert path.is_file() and path.stat().st_size > 1_000_000  # resnet18's 11M floats
        record = json.loads(Path(f"{path}.json").read_text())
        assert record["model_format"] == fmt and record["classes"] == ["digit_0", "digit_1"]
        assert record["input"]["shape"] == [1, 3, 32, 32]
        t = record["transforms"]
        assert (t["resize_short_side"], t["center_crop"]) == (37, 32)
        assert t["mean"] == [0.485 * 255, 0.456 * 255, 0.406 * 255]
        assert (record["epoch"], record["val_acc"]) == (best["epoch"], best["val_acc"])
    assert not list(run.glob(".best.tmp*"))  # no temporary files left


@SHARES_RUN
def test_predict_agrees_across_run_dir_mindir_and_onnx(run, exported, digits_2class, tmp_path):
    val = digits_2class / "val"
    best = max((json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()),
               key=lambda r: (r["val_acc"], r["epoch"]))
    tables = {}
    for name, source in (("run", run), ("mindir", exported["MINDIR"]),
                         ("onnx", exported["ONNX"])):
        out = tmp_path / f"{name}.csv"
        pic = tmp_path / f"{name}.png"
        r = packrun("predict", source, val, "--top_k=2", f"--csv={out}", f"--picture={pic}")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        lines = [l for l in r.stdout.splitlines() if l.startswith(str(val))]
        assert len(lines) == 16 and all(len(l.split()) == 5 for l in lines)
        assert "16 of 16 images predicted" in r.stdout
        assert f"; accuracy {best['val_acc']} (" in r.stdout  # what the run recorded
        assert pic.is_file() and pic.stat().st_size > 1000
        tables[name] = read_csv(out)
    ref = tables["run"]
    assert len(ref) == 16
    correct = sum(row["class_1"] == Path(row["path"]).parent.name for row in ref)
    assert correct / 16 == best["val_acc"]
    for name in ("mindir", "onnx"):
        for a, b in zip(ref, tables[name]):
            assert a["path"] == b["path"] and a["class_1"] == b["class_1"], name
            for k in ("probability_1", "probability_2"):
                assert abs(float(a[k]) - float(b[k])) <= 1e-4, (name, a, b)


@SHARES_RUN
def test_an_undecodable_image_is_named_and_the_others_predicted(run, digits_2class, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = sorted((digits_2class / "val" / "digit_0").iterdir())[:2]
    for g in good:
        shutil.copy(g, folder / g.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "p.csv"
    r = packrun("predict", run, folder, tmp_path / "absent.jpg", f"--csv={out}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"packrun: error: {folder / 'broken.jpg'}: cannot be decoded" in r.stderr
    assert f"packrun: error: {tmp_path / 'absent.jpg'}: no such file or directory" in r.stderr
    assert "Traceback" not in r.stderr
    assert sum(l.startswith(str(folder)) for l in r.stdout.splitlines()) == 2
    assert "2 of 4 images predicted" in r.stdout
    rows = read_csv(out)
    assert [Path(row["path"]).name for row in rows] == [g.name for g in good] + \
        ["broken.jpg", "absent.jpg"]
    assert rows[2]["error"].startswith("cannot be decoded") and rows[2]["class_1"] == ""


@SHARES_RUN
def test_a_run_directory_without_best_ckpt(run, tmp_path):
    empty = tmp_path / "unfinished"
    empty.mkdir()
    shutil.copy(run / "job.json", empty / "job.json")
    for args in (("export", empty), ("predict", empty, run)):
        r = packrun(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.strip().splitlines() == [
            (f"packrun: error: {empty} has no best.ckpt: no epoch has been evaluated yet (or "
             "the run failed before); wait for the run, or give --checkpoint=last or "
             "--checkpoint=PATH")], args
    assert not list(empty.glob("*.mindir*"))
    r = packrun("export", tmp_path)
    assert r.returncode == 2 and "is not a run directory (no job.json)" in r.stderr


@SHARES_RUN
def test_without_onnx_installed_the_message_says_how_to_get_it(run, exported, tmp_path):
    stubs = tmp_path / "stubs"
    for name in ("onnx", "onnxruntime"):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(f"raise ImportError('No module named {name}')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(stubs), str(REPO)])}
    r = packrun("export", run, "--format=ONNX", f"--out={tmp_path / 'm.onnx'}", env_extra=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "ONNX needs the optional packages onnx and onnxruntime" in r.stderr
    assert "pip install 'packrun[onnx]'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.onnx").exists()
    r = packrun("predict", exported["ONNX"], run, env_extra=env)
    assert r.returncode == 2 and "needs onnxruntime: pip install 'packrun[onnx]'" in r.stderr


@SHARES_RUN
def test_bad_export_and_predict_arguments(run, exported, tmp_path):
    r = packrun("export", run, "--format=TFLITE")
    assert r.returncode == 2 and "--format=TFLITE: give MINDIR or ONNX" in r.stderr
    r = packrun("export", run, "--format=MINDIR,ONNX", f"--out={tmp_path / 'm.onnx'}")
    assert r.returncode == 2 and "names one file: give one --format with it" in r.stderr
    assert not list(tmp_path.glob("m.*"))
    r = packrun("export", run, f"--checkpoint={tmp_path / 'none.ckpt'}")
    assert r.returncode == 2 and "none.ckpt is not a file" in r.stderr
    lonely = tmp_path / "lonely.mindir"
    shutil.copy(exported["MINDIR"], lonely)
    r = packrun("predict", lonely, run)
    assert r.returncode == 2 and "lonely.mindir.json not found beside lonely.mindir" in r.stderr
    r = packrun("predict", run)
    assert r.returncode == 2 and "give images or directories to predict" in r.stderr
    r = packrun("predict", run, run, "--top_k=0")
    assert r.returncode == 2 and "--top_k=0: give 1 or more" in r.stderr


@pytest.mark.parametrize("arch, size", [("resnet50", 37), ("resnet50", 40), ("resnet34", 33)])
def test_the_onnx_graph_equals_the_network_for_other_archs_and_sizes(arch, size, tmp_path):
    """Padding of the replaced max-pool depends on arch and input size; BatchNorm folding on
    real (non-trivial) statistics."""
    import mindspore as ms
    import numpy as np
    import onnxruntime

    from launcher.core.spec import build_spec
    from src.infer.export import onnx_graph
    from src.model.resnet import build_resnet
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    spec = build_spec({"train_dir": "/t", "val_dir": "/v", "arch": arch, "image_size": size,
                       "num_classes": 3}, check_paths=False)
    rng = np.random.default_rng(1)
    net = build_resnet(arch, 3, cpu_conv=False)
    for p in net.get_parameters():
        if p.name.endswith(("moving_mean", "moving_variance", "gamma", "beta")):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    net.set_train(False)
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    expected = net(ms.Tensor(x)).asnumpy()
    graph = onnx_graph(net, spec)
    ms.export(graph, ms.Tensor(x), file_name=str(tmp_path / "m"), file_format="ONNX")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(got - expected).max()) <= 1e-4 * scale
