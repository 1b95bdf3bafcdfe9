"""Feature-cache and data-pipeline benchmark (not a test), measured side by side in one run.

    python benchmarks/bench_fixed_feature.py [--epochs 20] [--image-size 64] [--freeze all]

1. A 20-epoch fixed_feature run (resnet18 pretrained on digits 0-7) on two data sets: the demo's
   8-vs-9 target (20 training images) and digits 0-7 itself (~1150 training images), with
   feature_cache = off, augmented (2 views) and eval: wall time, training + evaluation time,
   best validation accuracy, and the speed-up over `off`; `eval recomputed` is the eval view
   with cache_max_gib = 0 (the fallback past the limit: same result, the frozen prefix recomputed
   every step). --freeze=layer2 (etc.) measures a partial freeze instead of fixed_feature.
2. The input pipeline alone (decode + training augmentation, ImageFolderDataset) in images/s,
   next to the images/s a fine-tune training step consumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.demo.digits_data import export_digits  # noqa: E402 (after sys.path gets the checkout)
from tests.helpers import write_job  # noqa: E402 (after sys.path gets the checkout)


def packrun_debug(job: Path, **flags) -> tuple[float, Path]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "launcher.cli.main", "debug", str(job),
                        *(f"--{k}={v}" for k, v in flags.items())], capture_output=True, text=True,
                       cwd=REPO)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"run failed:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    line = [l for l in r.stdout.splitlines() if l.startswith("packrun: run directory ")][-1]
    return wall, Path(line.split("packrun: run directory ", 1)[1])


def metrics(run_dir: Path) -> dict:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"train_eval_s": sum(r["epoch_time_s"] + r["eval_time_s"] for r in rows),
            "best": max(r["val_acc"] for r in rows),
            "images_per_s": rows[-1]["images_per_s"]}


def pipeline_images_per_s(train_dir: Path, image_size: int, batch: int) -> float:
    from src.data.dataset import class_names, create_dataset
    data = create_dataset(train_dir, class_names(train_dir), image_size, batch, training=True)
    n, t0 = 0, time.monotonic()
    for _ in range(2):
        for images, _labels in data.create_tuple_iterator(num_epochs=1, output_numpy=True):
            n += len(images)
    return n / (time.monotonic() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--freeze", default="all", help="all (fixed_feature) or stem..layer3")
    ap.add_argument("--data", choices=("both", "small"), default="both",
                    help="small: only the 20-image 8-vs-9 target")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="packrun-bench-ff-"))
    export_digits(work / "source", list(range(8)), size=args.image_size)
    export_digits(work / "target", [8, 9], size=args.image_size, train_per_class=10,
                  val_fraction=0.8)
    common = dict(arch="resnet18", image_size=args.image_size, device="CPU", min_crop_scale=0.5,
                  hflip=False, output_dir=str(work / "runs"), momentum=0.9)
    source = write_job(work / "source.toml", name="source", num_classes=8, epochs=3, lr=0.05,
                       batch_size=32, train_dir=str(work / "source/train"),
                       val_dir=str(work / "source/val"), **common)
    _, source_run = packrun_debug(source)
    pretrained = source_run / "best.ckpt"
    print(f"pretrained: resnet18 on digits 0-7, val acc {metrics(source_run)['best']:.3f}")

    cases = {
        "8 vs 9 (20 train images)": write_job(
            work / "target.toml", name="target", num_classes=2, batch_size=10,
            train_dir=str(work / "target/train"), val_dir=str(work / "target/val"), **common),
        "digits 0-7 (1150 train images)": write_job(
            work / "ff_source.toml", name="ff_source", num_classes=8, batch_size=32,
            train_dir=str(work / "source/train"), val_dir=str(work / "source/val"), **common),
    }
    measured = dict(list(cases.items())[:1]) if args.data == "small" else cases
    print(f"\nfreeze = {args.freeze}, {args.epochs} epochs, {args.image_size} px, resnet18, "
          "this machine")
    print(f"{'data':<32}{'feature_cache':<15}{'wall s':>8}{'train+eval s':>14}{'best acc':>10}"
          f"{'speed-up':>10}")
    for label, job in measured.items():
        base = None
        for cache in ("off", "augmented", "eval", "eval recomputed"):
            extra = {"cache_max_gib": 0} if cache == "eval recomputed" else {}
            wall, run = packrun_debug(job, freeze=args.freeze, lr=0.02, epochs=args.epochs,
                                      feature_cache=cache.split()[0], pretrained=pretrained,
                                      **extra)
            m = metrics(run)
            base = base or wall
            print(f"{label:<32}{cache:<15}{wall:>8.1f}{m['train_eval_s']:>14.1f}"
                  f"{m['best']:>10.3f}{base / wall:>9.1f}x")

    wall, run = packrun_debug(cases["digits 0-7 (1150 train images)"], epochs=2)
    step = metrics(run)["images_per_s"]
    pipe = pipeline_images_per_s(work / "source/train", args.image_size, 32)
    print(f"\ninput pipeline (decode + augmentation, 1 process): {pipe:8.1f} images/s")
    print(f"fine-tune training step consumes:                 {step:8.1f} images/s")
    print(f"pipeline headroom:                                {pipe / step:8.1f}x")


if __name__ == "__main__":
    main()
