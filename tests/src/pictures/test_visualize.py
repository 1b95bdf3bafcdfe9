"""The pictures (src/pictures/visualize.py), `packrun show-batch`, and the training progress
line."""

import io
import sys

import numpy as np
import pytest
from PIL import Image

from src.pictures import visualize
from src.pictures.visualize import Curve
from tests.helpers import packrun, write_tiny_job

MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def panel_size(rows, cols, title_lines=0):
    """The PNG size, in pixels, of a grid of rows x cols panels under a title."""
    return (round(visualize.PANEL_W * cols * visualize.DPI),
            round((visualize.PANEL_H * rows + visualize.TITLE_LINE_H * title_lines)
                  * visualize.DPI))


def images(n, size=16, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


# --- grids -----------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("n, shape", [(24, (3, 8)), (8, (1, 8)), (5, (1, 5)), (9, (2, 8)),
                                      (1, (1, 1)), (10, (2, 5)), (12, (2, 6)), (32, (4, 8))])
def test_grid_shape_follows_the_batch(n, shape):
    assert visualize.grid_shape(n) == shape


@pytest.mark.unit
@pytest.mark.parametrize("n, count", [(10, 10), (11, 8), (9, 8), (24, 24), (7, 7), (63, 63),
                                      (61, 56)])
def test_a_sample_grid_has_no_empty_cell(n, count):
    assert visualize.full_grid_count(n) == count
    rows, cols = visualize.grid_shape(count)
    assert rows * cols == count


@pytest.mark.unit
def test_display_images_undo_the_pipelines_normalize():
    pixels = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3)).astype(np.float32)
    normalised = ((pixels - MEAN) / STD).transpose(0, 3, 1, 2)  # what the network gets: NCHW
    shown = visualize.display_images(normalised, MEAN, STD)
    assert shown.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(shown, pixels / 255.0, atol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("n, rows, cols", [(24, 3, 8), (5, 1, 5), (12, 2, 6)])
def test_batch_grid_has_one_panel_per_image_titled_with_its_class(tmp_path, n, rows, cols):
    labels = [i % 3 for i in range(n)]
    fig = visualize.batch_grid(images(n), labels, ["cat", "dog", "fox"])
    assert len(fig.axes) == n
    assert [ax.get_title() for ax in fig.axes] == [["cat", "dog", "fox"][y] for y in labels]
    path = visualize.save_png(fig, tmp_path / "batch.png")
    assert Image.open(path).size == panel_size(rows, cols)


@pytest.mark.unit
def test_a_huge_batch_shows_its_first_panels_and_says_so():
    fig = visualize.batch_grid(images(100, size=4), [0] * 100, ["a"])
    assert len(fig.axes) == visualize.MAX_PANELS
    assert "first 64 of 100" in fig.get_suptitle()


def title_pixels(path, fig):
    """RGB pixels of each panel's title, read back from the PNG on disk."""
    png = np.asarray(Image.open(path).convert("RGB")).astype(int)
    height = png.shape[0]
    crops = []
    for ax in fig.axes:
        box = ax.title.get_window_extent()
        crops.append(png[int(height - box.y1):int(height - box.y0) + 1,
                         int(box.x0):int(box.x1) + 1].reshape(-1, 3))
    return crops


def is_red(p):
    return (p[:, 0] > 150) & (p[:, 1] < 100) & (p[:, 2] < 100)


def is_blue(p):
    return (p[:, 2] > 150) & (p[:, 0] < 100) & (p[:, 1] < 100)


@pytest.mark.unit
def test_prediction_titles_are_blue_when_right_and_red_when_wrong(tmp_path):
    classes = ["dogs", "wolves"]
    labels = [0, 0, 1, 1, 0, 1]
    preds = [0, 1, 1, 0, 0, 1]                 # panels 1 and 3 are wrong
    fig = visualize.prediction_grid(images(6), preds, labels, classes, title="run: best.ckpt")
    assert [ax.get_title() for ax in fig.axes] == \
        ["pre:dogs", "pre:wolves\n(true dogs)", "pre:wolves", "pre:dogs\n(true wolves)",
         "pre:dogs", "pre:wolves"]
    assert fig.get_suptitle() == "run: best.ckpt"
    assert [ax.title.get_color() for ax in fig.axes] == \
        ["blue", "red", "blue", "red", "blue", "blue"]
    # and that is what the PNG shows
    path = visualize.save_png(fig, tmp_path / "predictions.png")
    for i, pixels in enumerate(title_pixels(path, fig)):
        wrong = preds[i] != labels[i]
        assert is_red(pixels).sum() > 10 if wrong else is_blue(pixels).sum() > 10, i
        assert (is_blue(pixels) if wrong else is_red(pixels)).sum() == 0, i


# --- curves and confusion ----------------------------------------------------------------------

ROWS = [{"epoch": 1, "train_loss": 0.9, "val_acc": 0.5},
        {"epoch": 2, "train_loss": 0.6, "val_acc": None},    # not evaluated
        {"epoch": 3, "train_loss": 0.4, "val_acc": 0.8},
        {"epoch": 4, "train_loss": 0.3, "val_acc": 0.8}]    # ties: the later epoch, as best.ckpt


@pytest.mark.unit
def test_curves_plot_loss_and_evaluated_accuracy_and_mark_the_best_epoch(tmp_path):
    curve = Curve.from_metrics("run", ROWS)
    assert curve.best_epoch == 4
    fig = visualize.curves_figure([curve])
    loss_ax, acc_ax = fig.axes
    assert list(loss_ax.lines[0].get_xdata()) == [1, 2, 3, 4]
    assert list(acc_ax.lines[0].get_xdata()) == [1, 3, 4]          # epoch 2 has no accuracy
    stars = [l for l in acc_ax.lines if l.get_marker() == "*"]
    assert len(stars) == 1
    assert list(stars[0].get_xdata()) == [4] and list(stars[0].get_ydata()) == [0.8]
    assert any(4 in l.get_xdata() and l.get_linestyle() == ":" for l in loss_ax.lines)
    assert Image.open(visualize.save_png(fig, tmp_path / "c.png")).size == (1100, 450)


@pytest.mark.unit
def test_curves_of_several_runs_are_overlaid_with_a_legend():
    fig = visualize.curves_figure([Curve.from_metrics("fine-tune", ROWS),
                                   Curve.from_metrics("from scratch", ROWS[:2])])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["fine-tune", "from scratch"]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.unit
@pytest.mark.parametrize("runs", [1, 3])
def test_curve_legends_sit_outside_the_data_and_epochs_are_whole_numbers(tmp_path, runs):
    rows = [{"epoch": 1, "train_loss": 0.9, "val_acc": 0.5},
            {"epoch": 2, "train_loss": 0.5, "val_acc": 0.9}]   # 2 epochs: ticks 1, 2 only
    fig = visualize.curves_figure([Curve.from_metrics(f"run {i}", rows) for i in range(runs)])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()                                                # lays the figure out
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        assert not _overlap(legend.get_window_extent(renderer), ax.get_window_extent(renderer))
        lo, hi = ax.get_xlim()
        shown = [(x, t.get_text()) for x, t in zip(ax.get_xticks(), ax.get_xticklabels())
                 if lo <= x <= hi]
        assert shown == [(1.0, "1"), (2.0, "2")], shown
    assert fig.axes[1].get_legend() is not None


@pytest.mark.unit
def test_confusion_title_names_the_checkpoint():
    fig = visualize.confusion_figure([0, 1], [0, 0], ["a", "b"], title="run: best.ckpt (epoch 3)")
    assert fig.axes[0].get_title().startswith("run: best.ckpt (epoch 3)\nconfusion matrix: 2 ")


@pytest.mark.unit
def test_a_non_finite_loss_is_marked_not_silently_dropped():
    rows = [dict(r) for r in ROWS]
    rows[2]["train_loss"] = float("inf")
    loss_ax = visualize.curves_figure([Curve.from_metrics("lr too high", rows)]).axes[0]
    marks = [l for l in loss_ax.lines if l.get_marker() == "X"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [3]
    legend = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert "lr too high: loss not finite" in legend


@pytest.mark.unit
def test_confusion_matrix_counts_and_per_class_accuracy():
    labels = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 0, 2]
    m = visualize.confusion_matrix(labels, preds, 4)
    np.testing.assert_array_equal(m, [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    acc = visualize.per_class_accuracy(m)
    np.testing.assert_allclose(acc[:3], [2 / 3, 0.5, 1.0])
    assert np.isnan(acc[3])                                           # no images of class 3


@pytest.mark.unit
def test_confusion_figure_shows_counts_and_per_class_accuracy(tmp_path):
    fig = visualize.confusion_figure([0, 0, 0, 1], [0, 0, 1, 1], ["dogs", "wolves"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dogs  67%", "wolves  100%"]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "1", "2"]
    assert "accuracy 0.7500" in ax.get_title()
    assert Image.open(visualize.save_png(fig, tmp_path / "m.png")).size == (550, 400)


# --- atomic writes -----------------------------------------------------------------------------

@pytest.mark.unit
def test_save_png_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "p.png"
    target.write_bytes(b"old")
    fig = visualize.batch_grid(images(2), [0, 0], ["a"])

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    fig.savefig = broken
    with pytest.raises(RuntimeError):
        visualize.save_png(fig, target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["p.png"]

    visualize.save_png(visualize.batch_grid(images(2), [0, 0], ["a"]), target)
    assert Image.open(target).size == panel_size(1, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


# --- packrun show-batch ------------------------------------------------------------------------

@pytest.fixture
def job(tmp_path, digits_2class):
    return write_tiny_job(tmp_path / "tiny.toml", digits_2class, lr=None, device=None)


@pytest.mark.e2e
@pytest.mark.parametrize("split, batch, rows, cols", [("train", 12, 2, 6), ("val", 5, 1, 5)])
def test_show_batch_writes_a_grid_sized_to_the_batch(tmp_path, job, split, batch, rows, cols):
    out = tmp_path / f"{split}.png"
    r = packrun("show-batch", job, f"--split={split}", f"--out={out}", f"--batch_size={batch}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(out)
    png = np.asarray(Image.open(out).convert("RGB"))
    assert Image.open(out).size == panel_size(rows, cols, title_lines=2)  # split, transforms
    assert len(np.unique(png.reshape(-1, 3), axis=0)) > 50   # images drawn, not empty panels


@pytest.mark.e2e
def test_show_batch_defaults_to_the_current_directory(tmp_path, job):
    r = packrun("show-batch", job, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(tmp_path / "tiny_train_batch.png").size == panel_size(1, 8, 2)


@pytest.mark.e2e
@pytest.mark.parametrize("args, message", [
    (["--split=test"], "--split is 'test'; choose 'train'"),
    (["--batch_size=100"], "is larger than the training split"),
    (["--out=/nonexistent/dir/x.png"], "directory /nonexistent/dir does not exist"),
])
def test_show_batch_user_errors_exit_2(job, args, message):
    r = packrun("show-batch", job, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr


# --- progress lines (src/training/callbacks.py ProgressLine) ------------------------------------

def progress(tty, monkeypatch, interval_s=0.0):
    from src.training.callbacks import ProgressLine
    clock = iter(range(1000))
    monkeypatch.setattr("src.training.callbacks.time.monotonic", lambda: float(next(clock)))
    out = io.StringIO()
    return ProgressLine(steps=4, images_per_step=8, interval_s=interval_s, tty=tty,
                    tty_interval_s=interval_s, out=out), out


@pytest.mark.unit
def test_progress_off_a_terminal_prints_plain_lines(monkeypatch):
    p, out = progress(False, monkeypatch)
    for done in range(1, 5):
        p.step(done, 0.5, epoch=1, epochs=3)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 3                     # the last step is followed by the epoch summary
    assert lines[0] == ("  epoch 1/3 step 1/4  loss 0.5000  first step 1 s (graph compile / "
                        "data start)  ETA after the next step")
    assert lines[1] == "  epoch 1/3 step 2/4  loss 0.5000  8.0 img/s  ETA epoch 2 s, run 10 s"


@pytest.mark.unit
def test_progress_eta_leaves_out_the_slow_first_step(monkeypatch):
    """The first step compiles the graph (30 s of a 69 s run): the ETA must not scale it up."""
    from src.training.callbacks import ProgressLine
    times = iter([0.0, 100.0, 101.0, 102.0, 200.0, 201.0])  # start, steps 1-3; epoch 2
    monkeypatch.setattr("src.training.callbacks.time.monotonic", lambda: next(times))
    out = io.StringIO()
    p = ProgressLine(steps=10, images_per_step=8, interval_s=0.0, tty=False, out=out)
    for done in (1, 2, 3):
        p.step(done, 0.5, epoch=1, epochs=2)
    assert out.getvalue().splitlines()[-1].endswith("8.0 img/s  ETA epoch 7 s, run 17 s")
    p.restart()
    p.step(1, 0.5, epoch=2, epochs=2)
    assert "ETA after the next step" in out.getvalue().splitlines()[-1]


@pytest.mark.unit
def test_progress_off_a_terminal_is_periodic(monkeypatch):
    p, out = progress(False, monkeypatch, interval_s=10.0)
    for done in range(1, 4):
        p.step(done, 0.5, epoch=1, epochs=1)  # 1 s apart on the fake clock
    assert out.getvalue() == ""


@pytest.mark.unit
def test_progress_on_a_terminal_rewrites_one_line_and_ends_it_with_the_epoch(monkeypatch):
    p, out = progress(True, monkeypatch)
    for done in range(1, 5):
        p.step(done, 0.25, epoch=2, epochs=2)
    text = out.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    assert "step 4/4  loss 0.2500" in text.split("\r")[-1]


@pytest.mark.unit
def test_progress_reads_the_launchers_terminal_flag(monkeypatch):
    from src.training.callbacks import CONSOLE_TTY_ENV, ProgressLine
    monkeypatch.setenv(CONSOLE_TTY_ENV, "1")
    assert ProgressLine(4, 8).tty
    monkeypatch.setenv(CONSOLE_TTY_ENV, "0")
    assert not ProgressLine(4, 8).tty


@pytest.mark.unit
def test_the_launcher_tells_the_worker_whether_its_console_is_a_terminal(monkeypatch):
    from launcher.core.rank_env import worker_env
    from src.training.callbacks import CONSOLE_TTY_ENV
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert worker_env({})[CONSOLE_TTY_ENV] == "1"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert worker_env({})[CONSOLE_TTY_ENV] == "0"


@pytest.mark.unit
def test_batch_title_names_the_split_and_its_transforms():
    from launcher.core.spec import build_spec
    from launcher.preflight.show_batch import batch_title
    spec = build_spec({"name": "dw", "train_dir": "/d/train", "val_dir": "/d/val", "hflip": False,
                       "min_crop_scale": 0.5, "image_size": 64}, check_paths=False)
    train = batch_title(spec, "train", 12)
    assert train.startswith("dw: one train batch of 12 from /d/train\n")
    assert "random crop (area >= 0.5) resized to 64 px, horizontal flip off" in train
    val = batch_title(spec, "val", 5)
    assert "one val batch of 5 from /d/val" in val and "centre crop 64 px" in val
