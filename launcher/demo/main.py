"""`packrun demo`: real transfer learning on data that ships inside a PyPI package.

1. Export scikit-learn's digits as ImageFolders of JPEGs: a source task (digits 0-7, ~1150
   training images) and a target task (8 vs 9 with only a few training images per class).
2. Train a small ResNet from scratch on the source task (jobs/demo_source.toml) and keep its
   best checkpoint as the "pretrained" Model-Zoo-style checkpoint.
3. On the target task run jobs/demo.toml four ways: fine-tune, partial freeze (stem..layer2
   frozen), fixed feature, from scratch.
4. Print best and last validation accuracy and time for each, side by side.
5. Export the best of them (MindIR, and ONNX when onnxruntime is installed) and predict a few
   held-out validation images with the exported model.
"""

from __future__ import annotations

import codecs
import importlib.util
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from launcher.core.log import get_logger
from launcher.core.paths import REPO, importable
from launcher.core.rundir.metrics import best_row, read_metrics
from launcher.core.spec import load_job
from launcher.demo.digits_data import export_digits
from launcher.demo.side_by_side import (
    POLL_S,
    TAIL_NICE,
    SideBySide,
    debug_command,
    lower_priority,
    prepare_debug_run,
    results_final,
)
from launcher.demo.source_model import source_model
from launcher.runs.report import write_report
from launcher.supervise import processes
from launcher.sweep.report import run_rows, summary_table

log = get_logger(__name__)

SOURCE_JOB = REPO / "jobs" / "demo_source.toml"
TARGET_JOB = REPO / "jobs" / "demo.toml"
PRETRAINED = "pretrained/resnet18_digits0-7.ckpt"  # inside the demo's workdir

# target runs at a time (launcher/demo/side_by_side.py), with the same weights as one after the
# other: on 2 cores two runs took 0.6x the wall clock of one after the other; with the source model
# reused, the four runs 3 at a time 0.65x and 0.9x the time of 2 at a time, 4 at a time 0.85x
SIDE_BY_SIDE = 3

# --quick's data and batches, chosen so that each run compiles as few graphs as it can (the
# first-ever quick demo spent most of its time compiling): the source run's 96 validation images
# are one evaluation batch of jobs/demo_source.toml's eval_batch_size (two shapes were two
# evaluation graphs), and the target runs evaluate in batches of their training batch (10), so
# that the frozen runs' feature caches run their frozen prefix on one batch shape, not two (the
# training images' and the validation images').
QUICK_SOURCE_TRAIN = 24  # per class: 192 images, 6 steps of 32 an epoch
QUICK_SOURCE_VAL = 12  # per class: 96 images
QUICK_TARGET_EVAL_BATCH = 10

# "from scratch" runs beside the source run at this lower CPU priority (nice): the source run is
# what every other target run waits for, the early run only has to end before they do
EARLY_NICE = 10
# The three runs that load the source model start together and the one that ends last, freeze
# layer2 (it compiles three graphs: its frozen prefix's and the rest's for training and for
# evaluation), starts the export; the other two run beside it at this lower priority
LONGEST = "freeze layer2"
YIELD_NICE = 5

SOURCE_CLASSES = [0, 1, 2, 3, 4, 5, 6, 7]
TARGET_CLASSES = [8, 9]


def variants(workdir: Path) -> list[tuple[str, dict]]:
    """The target runs: (label, overrides of jobs/demo.toml)."""
    return [
        ("fine-tune", {"mode": "finetune"}),
        ("freeze layer2", {"freeze": "layer2", "name": "demo_freeze_layer2"}),
        ("fixed feature", {"mode": "fixed_feature", "lr": 0.02, "name": "demo_fixed_feature"}),
        ("from scratch", {"pretrained": "", "name": "demo_scratch"}),
    ]


def best_of(run_dir: Path) -> tuple[float, int]:
    best = best_row(read_metrics(run_dir))
    return (best["val_acc"], best["epoch"]) if best else (float("nan"), 0)


def run_demo(quick: bool = False, output_dir: str = "runs/demo", workdir: str = "demo_data",
             fresh: bool = False) -> int:
    work = Path(workdir).resolve()
    started = time.monotonic()
    log.info(f"packrun demo: exporting scikit-learn digits as JPEG ImageFolders under {work}")
    src_counts = export_digits(work / "source", SOURCE_CLASSES,
                               train_per_class=QUICK_SOURCE_TRAIN if quick else None,
                               val_per_class=QUICK_SOURCE_VAL if quick else None)
    tgt_counts = export_digits(work / "target", TARGET_CLASSES, train_per_class=10,
                               val_fraction=0.8, val_per_class=40 if quick else 100)
    log.info(f"  source (digits 0-7): {src_counts['train']} train / {src_counts['val']} val images")
    log.info(f"  target (8 vs 9):     {tgt_counts['train']} train / {tgt_counts['val']} val images")

    common: dict[str, object] = {"output_dir": output_dir}
    if quick:
        common["epochs"] = 2
    paths: dict[str, object] = {"train_dir": str(work / "source" / "train"),
                                "val_dir": str(work / "source" / "val")}
    if quick:  # the source job evaluates its last epoch only
        paths["eval_start_epoch"] = common["epochs"]
        # no warm-up epoch: it was half of the 2 (val acc 0.18, chance 0.125; without: 0.43)
        paths["warmup_epochs"] = 0
    target: dict[str, object] = {"train_dir": str(work / "target" / "train"),
                                 "val_dir": str(work / "target" / "val"),
                                 "pretrained": str(work / PRETRAINED)}
    if quick:  # evaluation batches of the training batch's size: see QUICK_TARGET_EVAL_BATCH
        target["eval_batch_size"] = QUICK_TARGET_EVAL_BATCH
    targets = variants(work)
    steps = len(targets) + 2  # the source run, the target runs, export and predict

    def spec(overrides: dict):
        return load_job(TARGET_JOB, {**common, **target, **overrides})

    pool = SideBySide(SIDE_BY_SIDE)
    source = SourceRun()
    best_model = BestModel(work / "target" / "val")
    results: list[dict] = []
    try:
        # from scratch needs no source model: it starts now, beside the source run
        early = {label: pool.add(label, spec(o), nice=EARLY_NICE) for label, o in targets
                 if o.get("pretrained") == ""}
        if early:
            log.info(f"packrun demo: target runs {SIDE_BY_SIDE} at a time; "
                     f"{', '.join(early)} starts now (it needs no source model) at a lower CPU "
                     "priority than the source run, each run's console follows in turn")
        log.info(f"\n=== 1/{steps} source task: resnet18 from scratch on digits 0-7 ===")
        if not source_model(load_job(SOURCE_JOB, {**common, **paths}), work / PRETRAINED,
                            fresh, source, best_of):
            return 1
        runs = [early.get(label) or
                pool.add(label, spec(o), nice=0 if label == LONGEST else YIELD_NICE)
                for label, o in targets]

        def export_when_final() -> None:
            if best_model.best is None and all(run.final for run in runs):
                best_model.start(max((result(run) for run in runs), key=lambda r: r["acc"]))

        def meanwhile() -> None:
            pool.poll()
            export_when_final()

        # the source run's last lines are shown before the target runs' consoles
        if source.wait(meanwhile) != 0:
            return 1

        for i, run in enumerate(runs, start=2):
            log.info(f"\n=== {i}/{steps} target task 8 vs 9: {run.label} ===")
            if pool.follow(run, meanwhile=export_when_final) != 0 or run.run_dir is None:
                return 1
            results.append(result(run))
        export_when_final()
    finally:
        source.stop()
        pool.stop()
        if len(results) < len(targets):  # failed or interrupted
            best_model.stop()
    print(f"\npackrun demo: 8 vs 9 from {tgt_counts['train']} training images, "
          f"{tgt_counts['val']} validation images\n")
    print(summary_table(run_rows([r["run_dir"] for r in results], [r["label"] for r in results],
                                 [r["time"] for r in results]), ["run"], sort=False))
    print(f"time: wall clock of each run (process start, data check, graph compilation, training, "
          f"evaluation, pictures; {SIDE_BY_SIDE} runs at a time);\n      the report's train/eval "
          "times count only the epochs' training steps and validation passes")
    # the report is drawn here while the export and predict children go on; its lines come
    # after theirs
    with ThreadPoolExecutor(1) as drawing:
        report = drawing.submit(write_report, [r["run_dir"] for r in results],
                                Path(output_dir) / "demo-report.html",
                                labels=[r["label"] for r in results])
        log.info(f"\n=== {steps}/{steps} using the best model: export and predict ===")
        rc = best_model.show()
        print(f"\nreport (curves, predictions, confusion matrices, timings): {report.result()}")
    print(f"TensorBoard (every run's curves; HParams side by side): packrun board {output_dir}")
    if rc != 0:
        return 1
    log.info(f"\ntotal {time.monotonic() - started:.0f} s")
    return 0


def result(run) -> dict:
    """A target run's row of the comparison (its results final)."""
    assert run.run_dir is not None
    acc, epoch = best_of(run.run_dir)
    return {"label": run.label, "acc": acc, "epoch": epoch, "time": run.seconds,
            "run_dir": run.run_dir}


def held_out_images(val_dir: Path, per_class: int = 3) -> list[Path]:
    """A few validation images of each class (never trained on)."""
    return [f for c in sorted(p for p in val_dir.iterdir() if p.is_dir())
            for f in sorted(c.iterdir())[:per_class]]


# `packrun predict` started beside the export, its imports (nearly all of its CPU time: MindSpore
# for the evaluation transforms, onnxruntime) done while the export runs: the child waits for a
# line on stdin, "go" to run `packrun ARGS...` as `python -m launcher.cli.main` runs it, anything
# else or none (the export failed) to leave without a word
WARM_CLI = """
import sys
import launcher.cli.main as cli
import mindspore.dataset.vision
import src.infer.predict
try:
    import onnxruntime
except ImportError:
    pass
if sys.stdin.readline().strip() != "go":
    sys.exit(1)
sys.argv[0] = cli.__file__
cli.main()
"""


class BestModel:
    """Step 6, using the best model: export the best target run (MindIR, and ONNX when
    onnxruntime is installed) and predict a few held-out images with the exported file, as
    the commands `packrun export` and `packrun predict`. `start(best)` starts them in the
    background as soon as every target run's results are final (the last run's closing lines,
    digests and pictures are left: a second or more on the critical path of every demo), the
    predict child beside the export (WARM_CLI); `show()` then shows their output, kept until then
    and as it comes, after the comparison table, and returns 0 when both succeeded."""

    def __init__(self, val_dir: Path, cli: list[str] | None = None,
                 warm_cli: list[str] | None = None):
        self.val_dir = val_dir
        self.cli = cli or [sys.executable, "-m", "launcher.cli.main"]
        self.warm_cli = warm_cli or [sys.executable, "-c", WARM_CLI]
        self.best: dict | None = None
        self.proc: subprocess.Popen | None = None  # the child whose output is being kept
        self.children: list[subprocess.Popen] = []
        self.lock = threading.Lock()
        self.rc = 1
        self.stopped = False
        self.out: queue.SimpleQueue = queue.SimpleQueue()  # (stream, text); None: the end
        self.thread: threading.Thread | None = None

    def start(self, best: dict) -> None:
        self.best = best
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _say(self, text: str) -> None:
        self.out.put(("log", text))

    def _run(self) -> None:
        try:
            self.rc = self._export_and_predict()
        finally:
            for child in self.children:  # the pipes of one stopped before it was heard
                for pipe in (child.stdin, child.stdout, child.stderr):
                    if pipe is not None:
                        pipe.close()
            self.out.put(None)

    def _export_and_predict(self) -> int:
        assert self.best is not None
        run_dir = self.best["run_dir"]
        formats = ["MINDIR"] + (["ONNX"] if importlib.util.find_spec("onnxruntime") else [])
        model = run_dir / f"best.{formats[-1].lower()}"
        images = held_out_images(self.val_dir)
        csv = run_dir / "demo_predictions.csv"
        predict = self._spawn(self.warm_cli + ["predict", str(model), *map(str, images),
                                               f"--csv={csv}"], stdin=subprocess.PIPE)
        # both formats in one process: one start and `import mindspore`, not two
        self._say(f"$ packrun export {run_dir} --format={','.join(formats)}")
        export = self._spawn(self.cli + ["export", str(run_dir), f"--format={','.join(formats)}"])
        if export is None or self._keep_output(export) != 0:
            if predict is not None:  # only imported: it goes without a word
                processes.stop(predict)
            return 1
        if "ONNX" not in formats:
            self._say("(ONNX export skipped: pip install 'packrun[onnx]' adds onnx and "
                      "onnxruntime)")
        self._say(f"$ packrun predict {model} <{len(images)} held-out images> --csv={csv}")
        if predict is None:
            return 1
        self._tell(predict, "go\n")
        return self._keep_output(predict)

    def _spawn(self, command: list[str], stdin=subprocess.DEVNULL) -> subprocess.Popen | None:
        """The child `command` in its own session, its output piped; None once stopped."""
        with self.lock:
            if self.stopped:
                return None
            child = subprocess.Popen(command, cwd=REPO, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
            self.children.append(child)
            return child

    @staticmethod
    def _tell(child: subprocess.Popen, line: str) -> None:
        assert child.stdin is not None
        try:
            child.stdin.write(line.encode())
            child.stdin.close()
        except OSError:  # it has ended already: its output says why
            pass

    def _keep_output(self, child: subprocess.Popen) -> int:
        """`child`'s stdout and stderr kept for show() until it ends; its exit status."""
        self.proc = child
        pumps = [threading.Thread(target=self._pump, args=(pipe, name), daemon=True)
                 for pipe, name in ((child.stdout, "stdout"), (child.stderr, "stderr"))]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        return processes.exit_code(child.wait())

    def _pump(self, pipe, name: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for line in iter(pipe.readline, b""):
            self.out.put((name, decoder.decode(line)))
        pipe.close()

    def show(self) -> int:
        """Their output (from the start) until both have ended; 0 when both succeeded."""
        if self.best is None:
            return 1
        log.info(f"best: {self.best['label']} ({self.best['acc']:.4f}) in {self.best['run_dir']}")
        try:
            while (item := self.out.get()) is not None:
                stream, text = item
                if stream == "log":
                    log.info(text)
                else:
                    out = sys.stdout if stream == "stdout" else sys.stderr
                    out.write(text)
                    out.flush()
        except BaseException:  # Ctrl-C: the children run in their own sessions
            self.stop()
            raise
        return self.rc

    def stop(self) -> None:
        """The demo failed or was interrupted: end the children running, start no other."""
        with self.lock:
            self.stopped = True
            children = list(self.children)
        for child in children:
            if child.poll() is None:
                processes.stop(child)


class SourceRun:
    """The source job run as `packrun debug` runs it (the child `packrun debug --resume RUN_DIR`,
    its console on this one), handed over as soon as its best.ckpt is final: when its worker
    reaches the FINISHING stage (after the last epoch: the closing line, the weights digests and
    the pictures are left, about 1.5 s), so the target runs that load it start then, and those
    last seconds go on at TAIL_NICE. `wait()`: its exit status, once it has ended."""

    def __init__(self, prepare=prepare_debug_run, command=debug_command) -> None:
        self.prepare, self.command = prepare, command  # as SideBySide's (tests swap them)
        self.proc: subprocess.Popen | None = None

    def __call__(self, spec) -> Path | None:
        """Run `spec`; its run directory once best.ckpt is final, None if it failed before."""
        run_dir, preamble = self.prepare(spec)
        print(preamble, end="", flush=True)
        self.proc = processes.spawn(self.command(run_dir), env=importable(), stdout=None)
        while self.proc.poll() is None:
            if results_final(run_dir):  # its last seconds yield to the target runs
                lower_priority(self.proc, TAIL_NICE)
                return run_dir
            time.sleep(POLL_S)
        return run_dir if self.wait() == 0 else None

    def wait(self, meanwhile: Callable[[], None] = lambda: None) -> int:
        """Its exit status once it has ended, `meanwhile()` called at each look."""
        if self.proc is None:  # the source model was reused
            return 0
        while self.proc.poll() is None:
            meanwhile()
            time.sleep(POLL_S)
        return processes.exit_code(self.proc.wait())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            processes.stop(self.proc)
