"""Pictures at the end of a real run (src/pictures/run.py via the worker) and `packrun report`:
report.html is well-formed, self-contained, embeds every picture, compares several runs, and
renders in headless Chromium."""

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher.core.paths import REPO
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.spec import build_spec
from launcher.runs.report import write_report
from src.pictures import visualize
from tests.helpers import need_tool, packrun, run_dir_of, write_tiny_job

PICTURES = ("curves.png", "predictions.png", "confusion.png")


# --- a real run: resnet18, 32 px, 2 classes of digits, 2 epochs -----------------------------------

# (pytest-xdist builds a module fixture once per worker that runs a test using it. The tests
# that share `finished_run` are one xdist group, so that README's `-n 3 --dist loadgroup`
# builds it once.)
SHARES_RUN = pytest.mark.xdist_group("report_finished_run")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("pictures")
    job = write_tiny_job(d / "tiny.toml", digits_2class, epochs=2)
    r = packrun("debug", job)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = run_dir_of(r)
    return r.stdout, run_dir


@pytest.mark.e2e
@SHARES_RUN
def test_a_finished_run_has_its_pictures(finished_run):
    stdout, run_dir = finished_run
    assert "pictures: curves.png, predictions.png, confusion.png in " in stdout
    assert "warning: could not make" not in stdout
    # 16 validation images, batch 8: one row of 8 predictions as the tutorial draws a batch,
    # under a two-line title (run and checkpoint; images and mistakes shown)
    assert Image.open(run_dir / "predictions.png").size == (1200, 170 + 40)
    assert Image.open(run_dir / "curves.png").size == (1100, 450)
    assert Image.open(run_dir / "confusion.png").size == (550, 400)
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


SECOND_PASS = """
import sys
from pathlib import Path
from launcher.core.rundir.job_json import spec_from_json
from src import train
from src.data import dataset
from src.pictures.run import make_run_pictures
run_dir = Path(sys.argv[1])
spec = spec_from_json(run_dir)
train.configure_context(spec)
classes = dataset.class_names(spec.train_dir)
val = dataset.create_dataset(spec.val_dir, training=False, classes=classes,
                             image_size=spec.image_size,
                             batch_size=spec.eval_batch_size or spec.batch_size,
                             num_parallel_workers=dataset.pipeline_workers(
                                 spec.num_parallel_workers))
make_run_pictures(spec, run_dir, train.build_network(spec), val, classes)
"""


@pytest.mark.e2e
@SHARES_RUN
def test_pictures_from_the_best_epochs_evaluation_equal_a_second_pass(finished_run, tmp_path):
    """The run drew predictions.png and confusion.png from the evaluation that made best.ckpt:
    the same pictures as loading best.ckpt and predicting the whole split again."""
    stdout, run_dir = finished_run
    assert re.search(r"pictures: curves.png, predictions.png, confusion.png in \S+ "
                     r"\([\d.]+ s, best epoch's evaluation\)", stdout)
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("job.json", "metrics.jsonl", "best.ckpt"):
        shutil.copy(run_dir / name, copy / name)
    r = subprocess.run([sys.executable, "-c", SECOND_PASS, str(copy)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "best epoch's evaluation" not in r.stdout and "pictures: curves.png" in r.stdout
    for name in ("predictions.png", "confusion.png"):
        assert (copy / name).read_bytes() == (run_dir / name).read_bytes(), name


@pytest.mark.e2e
@SHARES_RUN
def test_a_picture_that_cannot_be_made_is_a_warning_not_a_failure(finished_run, tmp_path, capsys):
    from launcher.core.rundir.job_json import spec_from_json
    from src.pictures.run import make_run_pictures
    _, run_dir = finished_run
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("job.json", "metrics.jsonl"):           # no best.ckpt
        shutil.copy(run_dir / name, copy / name)
    written = make_run_pictures(spec_from_json(copy), copy, net=None, val_ds=None,
                                classes=["digit_0", "digit_1"])
    assert written == [copy / "curves.png"]
    out = capsys.readouterr().out
    assert "warning: could not make predictions.png and confusion.png: FileNotFoundError" in out
    assert "best.ckpt is missing" in out


# --- reading report.html back ------------------------------------------------------------------

class Page(HTMLParser):
    """Checks nesting (every non-void element closed in order) and collects the pictures."""
    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self, text):
        super().__init__()
        self.stack, self.images, self.text = [], [], []
        self.feed(text)
        self.close()
        assert self.stack == [], f"unclosed elements: {self.stack}"

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    @property
    def plain(self):
        return " ".join(" ".join(self.text).split())


def embedded(page: Page) -> dict[str, bytes]:
    """{data-file: PNG bytes} of every image, all of them data URIs (the page is offline)."""
    out = {}
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,"), img["src"][:80]
        out[img["data-file"]] = base64.b64decode(img["src"].split(",", 1)[1])
    return out


@pytest.mark.e2e
@SHARES_RUN
def test_report_of_a_run_embeds_every_picture_and_its_epochs(finished_run):
    _, run_dir = finished_run
    r = packrun("report", run_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == str(run_dir / "report.html")
    page = Page((run_dir / "report.html").read_text(encoding="utf-8"))
    pictures = embedded(page)
    assert set(pictures) == set(PICTURES)
    for name in PICTURES:
        assert pictures[name] == (run_dir / name).read_bytes()
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: (r["val_acc"], r["epoch"]))
    assert f"Best val acc {best['val_acc']:.4f} at epoch {best['epoch']}" in page.plain
    for row in rows:
        assert f"{row['train_loss']:.5f}" in page.plain
    assert "logs/worker_0.log" in page.plain and "finished (exit 0)" in page.plain
    assert "min_crop_scale" in page.plain and "0.5" in page.plain   # the resolved spec


# --- several runs: the demo's fine-tune vs fixed feature vs from scratch -----------------------

def fake_run(root: Path, name: str, accs: list[float], **keys) -> Path:
    """A run directory as the worker leaves it, without training: job.json, metrics.jsonl,
    a worker log with progress lines (terminal style, `\\r`), curves.png."""
    run_dir = root / f"{name}-20250101-000000"
    (run_dir / "logs").mkdir(parents=True)
    spec = build_spec({"name": name, "train_dir": "/data/train", "val_dir": "/data/val",
                       "arch": "resnet18", "epochs": len(accs), **keys}, check_paths=False)
    (run_dir / "job.json").write_text(spec_to_json(spec))
    rows = []
    for e, acc in enumerate(accs, start=1):
        best = max(accs[:e])
        rows.append({"epoch": e, "train_loss": 1.0 / e, "val_acc": acc, "best_acc": best,
                     "best_epoch": max(i + 1 for i in range(e) if accs[i] == best),
                     "epoch_time_s": 2.0 if e == 1 else 1.0, "eval_time_s": 0.25,
                     "step_time_ms": 100.0, "images_per_s": 240.0, "steps": 10, "lr": 0.001})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "logs" / "worker_0.log").write_text(
        "\r  epoch 1/2 step 5/10  loss 0.5000  80.0 img/s  ETA epoch 5 s, run 15 s"
        "\r  epoch 1/2 step 10/10  loss 0.4000  96.5 img/s  ETA epoch 0 s, run 10 s\n"
        "End training, the best acc is: 0.9, the best acc epoch is 2\n")
    visualize.save_png(visualize.curves_figure([visualize.Curve.from_metrics(name, rows)]),
                       run_dir / "curves.png")
    return run_dir


@pytest.fixture
def three_runs(tmp_path):
    return [fake_run(tmp_path, "demo", [0.8, 0.95], pretrained="/p/src.ckpt"),
            fake_run(tmp_path, "demo_fixed_feature", [0.7, 0.9], mode="fixed_feature",
                     lr=0.05, pretrained="/p/src.ckpt"),
            fake_run(tmp_path, "demo_scratch", [0.5, 0.6])]


@pytest.mark.unit
def test_comparison_report_puts_the_runs_side_by_side(three_runs, tmp_path):
    labels = ["fine-tune", "fixed feature", "from scratch"]
    out = write_report(three_runs, tmp_path / "cmp.html", labels=labels)
    assert out == tmp_path / "cmp.html"
    page = Page(out.read_text(encoding="utf-8"))
    text = page.plain
    # the comparison table: label, mode, pretrained, best acc, best epoch, epochs, times
    assert "fine-tune finetune resnet18 src.ckpt 0.9500 2 0.9500 (epoch 2) 2/2 3.0 s 0.5 s " \
        "100.0 ms 240.0" in text
    assert "fixed feature fixed_feature resnet18 src.ckpt 0.9000 2" in text
    assert "from scratch finetune resnet18 (from scratch) 0.6000 2" in text
    assert "fine-tune ends highest: val acc 0.9500 at epoch 2; then fixed feature 0.9000, " \
        "from scratch 0.6000." in text
    # what differs between them, and nothing that does not
    html = out.read_text(encoding="utf-8")
    differing = html.split("Job keys that differ", 1)[1].split('<h2 id="run-1">', 1)[0]
    assert re.findall(r"<td class=\"l\"><code>(\w+)</code>", differing) == \
        ["name", "mode", "freeze", "lr", "pretrained"]
    pictures = embedded(page)
    assert Image.open(io.BytesIO(pictures["comparison-curves"])).size == (1100, 450)
    assert list(pictures).count("curves.png") == 1 and \
        sum(1 for img in page.images if img["data-file"] == "curves.png") == 3
    # timings leave out epoch 1 (graph compilation) from the steady-state means
    assert "Epoch 1 took 2.00 s (includes graph compilation); from epoch 2 on, an epoch takes " \
        "1.00 s on average" in text
    # per-rank throughput from the last progress update; `\r` updates collapsed in the tail
    assert "96.5" in text and "80.0 img/s ETA epoch 5 s" not in text


@pytest.mark.unit
def test_comparison_names_a_best_accuracy_the_run_did_not_keep(tmp_path):
    spike = fake_run(tmp_path, "scratch", [0.5, 0.75, 0.5, 0.5])
    steady = fake_run(tmp_path, "finetune", [0.8, 0.9, 0.92, 0.93])
    text = Page(write_report([spike, steady], tmp_path / "c.html").read_text()).plain
    assert "(from scratch) 0.7500 2 0.5000 (epoch 4)" in text
    assert "finetune ends highest: val acc 0.9300 at epoch 4; then scratch 0.5000. Best " \
        "accuracy not kept to the end: scratch (best 0.7500 at epoch 2)." in text


@pytest.mark.unit
def test_workers_table_takes_each_ranks_state_from_its_exit_file(tmp_path):
    run_dir = fake_run(tmp_path, "dp", [0.8, 0.9])
    logs = run_dir / "logs"
    digest = "rank {}: final weights sha256 a29a5963a4cb2ae1, batchnorm statistics sha256 f1\n"
    with open(logs / "worker_0.log", "a") as f:
        f.write(digest.format(0))
    (logs / "worker_0.exit").write_text("0\n")
    (logs / "worker_1.log").write_text("epoch lines of rank 1\n" + digest.format(1))  # no End line
    (logs / "worker_1.exit").write_text("0\n")
    (logs / "worker_2.log").write_text("stopped\n")
    (logs / "worker_2.exit").write_text("75\n")
    (logs / "worker_3.log").write_text("Traceback ...\n")
    (logs / "worker_3.exit").write_text("1\n")
    (logs / "worker_4.log").write_text("still going\n")
    text = Page(write_report([run_dir], tmp_path / "r.html").read_text()).plain
    assert "no end-of-training line" not in text
    assert "1 logs/worker_1.log" in text and "finished (exit 0) a29a5963a4cb2ae1 (= rank 0)" in text
    assert "stopped on request (exit 75): resumable from last.ckpt" in text
    assert "failed (exit 1)" in text and "running, or killed (no exit file yet)" in text


@pytest.mark.unit
def test_key_descriptions_render_their_markdown(tmp_path):
    html = write_report([fake_run(tmp_path, "md", [0.5])], tmp_path / "r.html").read_text()
    assert "<code>finetune</code> trains every parameter" in html
    spec_part = html.split("Resolved job spec", 1)[1]
    assert "`" not in spec_part


@pytest.mark.unit
def test_a_partial_freeze_run_shows_its_stage(tmp_path):
    runs = [fake_run(tmp_path, "demo_freeze", [0.7, 0.8], freeze="layer2", head_lr_mult=10.0),
            fake_run(tmp_path, "demo", [0.5, 0.6])]
    text = Page(write_report(runs, tmp_path / "r.html").read_text(encoding="utf-8")).plain
    assert "demo_freeze partial (freeze layer2) resnet18" in text
    assert "head_lr_mult 10.0" in text and "label_smoothing 0.0" in text


@pytest.mark.unit
def test_runs_of_the_same_job_are_told_apart_by_directory(tmp_path):
    a = fake_run(tmp_path / "a", "same", [0.5])
    b = fake_run(tmp_path / "b", "same", [0.6])
    b = b.rename(b.with_name("same-20250101-000001"))
    text = Page(write_report([a, b], tmp_path / "r.html").read_text()).plain
    assert "same-20250101-000000" in text and "same-20250101-000001" in text


@pytest.mark.unit
def test_report_of_a_run_that_has_not_finished_an_epoch(tmp_path):
    run_dir = fake_run(tmp_path, "young", [0.5])
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "curves.png").unlink()
    text = Page((write_report([run_dir])).read_text()).plain
    assert "No evaluated epoch recorded yet" in text
    assert "Not in the run directory: curves.png, predictions.png, confusion.png" in text


@pytest.mark.unit
@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "does not exist; pass the directory `packrun debug` printed"),
    (lambda d: d, "is not a packrun run directory (it has no job.json)"),
])
def test_report_on_something_that_is_not_a_run_dir_exits_2(tmp_path, make, message):
    target = make(tmp_path)
    r = packrun("report", target)
    assert r.returncode == 2, r.stderr
    assert str(target) in r.stderr and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.unit
def test_report_without_run_dirs_exits_2():
    r = packrun("report")
    assert r.returncode == 2 and "give at least one run directory" in r.stderr


@pytest.mark.unit
def test_report_does_not_import_mindspore(three_runs, tmp_path):
    code = ("import sys; from launcher.runs.report import write_report; "
            f"write_report({[str(d) for d in three_runs]!r}, {str(tmp_path / 'r.html')!r}); "
            "assert 'mindspore' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- headless Chromium ---------------------------------------------------------------------------

def screenshot(html: Path, png: Path) -> np.ndarray:
    chromium = need_tool("chromium", "to render the report headless")
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
             "--window-size=1200,1600", html.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and png.is_file(), r.stderr[-3000:]
    return np.asarray(Image.open(png).convert("RGB"))


@pytest.mark.e2e
@SHARES_RUN
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    _, run_dir = finished_run
    report = write_report([run_dir], tmp_path / "report.html")
    shot = screenshot(report, tmp_path / "shot.png")
    assert shot.shape == (1600, 1200, 3)
    non_white = (shot < 245).any(axis=2).mean()
    colours = len(np.unique(shot.reshape(-1, 3), axis=0))
    assert non_white > 0.10 and colours > 500, (non_white, colours)   # text, plots, digits
    # the curves picture is on the page: matplotlib's default blue ("C0", #1f77b4)
    assert (np.abs(shot.astype(int) - (31, 119, 180)).sum(axis=2) < 30).sum() > 200
