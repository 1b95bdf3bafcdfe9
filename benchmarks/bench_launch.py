"""Launch benchmark (not a test): packrun's overhead over bare msrun, and 1- vs 2-worker
throughput, measured side by side in one run on this machine.

    python benchmarks/bench_launch.py [--epochs 3] [--repeats 2]

1. The same worker script and job (resnet18, 32 px digits) started by the bare msrun command and
   by `packrun run --launcher=msrun`: wall time of each, and the ratio.
2. `packrun run` with 1 and with 2 workers: training images/s after the first epoch (which
   includes graph compilation), and the speed-up.
3. Core binding: 2 workers with `bind_cores` on (each on its own range of cores, its data
   pipeline sized to it) and off (every worker on every core), each against 1 worker, side by
   side. `--binding-only` runs just this part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.core.rank_env import worker_env  # noqa: E402 (after sys.path gets the checkout)
from launcher.core.rundir.layout import new_run_dir  # noqa: E402 (after sys.path gets the checkout)
from launcher.core.spec import load_job  # noqa: E402 (after sys.path gets the checkout)
from launcher.demo.digits_data import export_digits  # noqa: E402 (after sys.path gets the checkout)
from tests.helpers import write_job  # noqa: E402 (after sys.path gets the checkout)


def timed(cmd: list[str], **kw) -> float:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return time.monotonic() - t0


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def bare_msrun(job: Path, workers: int) -> float:
    spec = load_job(job, {"cards_per_node": workers})
    run_dir = new_run_dir(spec)
    return timed([sys.executable, "-m", "mindspore.parallel.cluster.run",
                  f"--worker_num={workers}", f"--local_worker_num={workers}",
                  f"--master_port={free_port()}", "--join=True", f"--log_dir={run_dir}/logs",
                  str(REPO / "src" / "train.py"), str(run_dir)], env=worker_env())


def packrun_run(job: Path, workers: int, name: str, *flags: str) -> tuple[float, Path]:
    t = timed([sys.executable, "-m", "launcher.cli.main", "run", str(job), f"--workers={workers}",
               f"--name={name}", *flags], cwd=REPO)
    runs = sorted((job.parent / "runs").glob(f"{name}-*"))
    return t, runs[-1]


def steady_images_per_s(run_dir: Path) -> float:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(r["images_per_s"] for r in rows[1:]) if len(rows) > 1 else \
        rows[0]["images_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--binding-only", action="store_true", help="only part 3 (core binding)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="packrun-bench-"))
    export_digits(work / "data", [0, 1, 2, 3], size=32, train_per_class=64, val_per_class=16)
    job = write_job(work / "bench.toml", name="bench", arch="resnet18", num_classes=4,
                    train_dir=str(work / "data" / "train"), val_dir=str(work / "data" / "val"),
                    image_size=32, batch_size=16, epochs=args.epochs, lr=0.02, device="CPU",
                    output_dir=str(work / "runs"), min_crop_scale=0.5, hflip=False)

    if args.binding_only:
        return binding(job, args)
    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        bare.append(bare_msrun(job, 2))
        ours.append(packrun_run(job, 2, "bench_overhead")[0])
    one = packrun_run(job, 1, "bench_w1")[1]
    two = packrun_run(job, 2, "bench_w2")[1]
    ips1, ips2 = steady_images_per_s(one), steady_images_per_s(two)

    b, o = statistics.median(bare), statistics.median(ours)
    print(f"\nlaunch overhead ({args.epochs} epochs, 2 workers, median of {args.repeats})")
    print(f"{'bare msrun':<28}{b:>8.1f} s")
    print(f"{'packrun run':<28}{o:>8.1f} s   (render + preflight + supervision)")
    print(f"{'ratio packrun / msrun':<28}{o / b:>8.2f}")
    print("\nthroughput after epoch 1 (train images/s, all workers)")
    print(f"{'1 worker':<28}{ips1:>8.1f}")
    print(f"{'2 workers':<28}{ips2:>8.1f}")
    print(f"{'speed-up':<28}{ips2 / ips1:>8.2f}")
    binding(job, args)


def binding(job: Path, args) -> None:
    """Part 3: 2 workers bound and unbound, each against 1 worker, runs interleaved."""
    one, bound, unbound = [], [], []
    for i in range(args.repeats):
        one.append(steady_images_per_s(packrun_run(job, 1, f"bench_b1_{i}")[1]))
        bound.append(steady_images_per_s(packrun_run(job, 2, f"bench_bound_{i}")[1]))
        unbound.append(steady_images_per_s(packrun_run(job, 2, f"bench_unbound_{i}",
                                                       "--bind_cores=false")[1]))
    ips1, ipsb, ipsu = map(statistics.median, (one, bound, unbound))
    cores = len(__import__("os").sched_getaffinity(0))
    print(f"\ncore binding ({cores} cores, train images/s after epoch 1, all workers, median of "
          f"{args.repeats}; num_parallel_workers auto: the rank's cores, at most 8)")
    print(f"{'1 worker':<28}{ips1:>8.1f}   1.00x")
    print(f"{'2 workers, bind_cores on':<28}{ipsb:>8.1f}   {ipsb / ips1:.2f}x")
    print(f"{'2 workers, bind_cores off':<28}{ipsu:>8.1f}   {ipsu / ips1:.2f}x")


if __name__ == "__main__":
    main()
