"""Time to the first steps (not a test): `packrun debug` against a plain PyTorch script, side by
side, alternating round by round.

    PACKRUN_TORCH_PYTHON=~/torchenv/bin/python python3 benchmarks/bench_first_step.py [--rounds 3]

The job is issue 30's: resnet50 at 224 px, batch 8, 16 real-photo JPEGs (crops of the photos
that ship in scikit-learn and matplotlib, 400x300) in two classes, one epoch of two steps, from
scratch. Each round runs, in turn:

  pytorch   benchmarks/torch_first_step.py under $PACKRUN_TORCH_PYTHON (torch + Pillow;
            benchmarks/TORCH_REFERENCE.md): start, read the JPEGs, build, 2 steps
  first     `packrun debug` with an empty compile cache (a first-ever run of this job)
  repeated  `packrun debug` again, the cache now holding the first's graphs

and times each from the moment the process is started to the end of its second training step
(packrun: the worker's `trained step 1.2` line, PACKRUN_TEST_TRACE_STEPS=1; PyTorch: its JSON
line, printed right after step 2). The table gives medians over the rounds and each packrun
time's ratio to PyTorch's of the same round (issue 30's targets: repeated <= 1.2x, first <=
3x). `--breakdown` also prints where one repeated run's time went, from its console lines.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.core.rundir.names import (  # noqa: E402 (after sys.path gets the checkout)
    COMPILE_CACHE_DIR_ENV,
    TRACE_ENV,
)
from tests.helpers import write_job  # noqa: E402 (after sys.path gets the checkout)

TORCH_ENV = "PACKRUN_TORCH_PYTHON"
TORCH_SCRIPT = Path(__file__).resolve().parent / "torch_first_step.py"
STEP2 = "trained step 1.2"


def photos() -> list[Path]:
    """Real photographs that ship inside this environment's packages."""
    import matplotlib
    import sklearn.datasets
    return [Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
            Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg",
            Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]


def make_data(root: Path, train_per_class: int = 8, val_per_class: int = 2) -> Path:
    """root/{train,val}/class_{0,1}/*.jpg: 400x300 crops of the photos, JPEG quality 90."""
    from PIL import Image
    images = [Image.open(p).convert("RGB") for p in photos()]
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(2):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                im = images[(c + i) % len(images)]
                w, h = im.size
                x, y = (i * 37) % (w // 3), (i * 23) % (h // 3)
                im.crop((x, y, x + w * 2 // 3, y + h * 2 // 3)).resize((400, 300)).save(
                    d / f"{split}_{c}_{i}.jpg", quality=90)
    return root


def until(cmd: list[str], marker, env: dict, cwd: Path) -> tuple[float, str]:
    """Start `cmd`; seconds until a line for which marker(line) holds, and all its output."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd)
    assert proc.stdout is not None
    seen, lines = None, []
    for line in proc.stdout:
        lines.append(f"{time.monotonic() - start:7.2f} {line}")
        if seen is None and marker(line):
            seen = time.monotonic() - start
    rc = proc.wait()
    if rc != 0 or seen is None:
        sys.exit(f"{' '.join(cmd)}: exit {rc}, marker {'seen' if seen else 'never seen'}\n"
                 + "".join(lines[-40:]))
    return seen, "".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--torch-python", default=os.environ.get(TORCH_ENV, ""))
    parser.add_argument("--breakdown", action="store_true",
                        help="print the console of one repeated run, time-stamped")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-first-step-"))
    data = make_data(work / "photos")
    job = write_job(work / "first_step.toml", name="first_step", arch="resnet50", num_classes=2,
                    train_dir=str(data / "train"), val_dir=str(data / "val"), pretrained="",
                    image_size=224, batch_size=8, epochs=1, lr=0.01, device="CPU",
                    output_dir=str(work / "runs"))
    packrun = [sys.executable, "-m", "launcher.cli.main", "debug", str(job)]
    env = dict(os.environ, PYTHONPATH=str(REPO), **{TRACE_ENV: "1"})
    times: dict[str, list[float]] = {"pytorch": [], "first": [], "repeated": []}
    shown = ""
    for r in range(args.rounds):
        if args.torch_python and args.torch_python != "none":
            t, _ = until([args.torch_python, str(TORCH_SCRIPT), str(data / "train")],
                         lambda line: line.startswith("{"), env, work)
            times["pytorch"].append(t)
        cache = work / f"compile-cache-{r}"  # empty: this round's first run is a first-ever one
        run_env = env | {COMPILE_CACHE_DIR_ENV: str(cache)}
        times["first"].append(until(packrun, lambda line: STEP2 in line, run_env, work)[0])
        t, shown = until(packrun, lambda line: STEP2 in line, run_env, work)
        times["repeated"].append(t)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()
                                             if v), flush=True)
    print(f"\nstart to the end of step 2, resnet50 224 px batch 8, 16 JPEGs; medians of "
          f"{args.rounds} round(s), load average {os.getloadavg()[0]:.1f} on "
          f"{len(os.sched_getaffinity(0))} core(s)")
    print(f"{'run':<10} {'median s':>9} {'ratio to PyTorch (per round)':>30}")
    for name, values in times.items():
        if not values:
            continue
        ratio = ""
        if name != "pytorch" and times["pytorch"]:
            per = [v / p for v, p in zip(values, times["pytorch"])]
            ratio = (f"{statistics.median(values) / statistics.median(times['pytorch']):.2f}x "
                     f"({', '.join(f'{x:.2f}' for x in per)})")
        print(f"{name:<10} {statistics.median(values):>9.2f} {ratio:>30}")
    if args.breakdown:
        print("\none repeated run, seconds since its start:\n" + re.sub(r"\n{2,}", "\n", shown))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
