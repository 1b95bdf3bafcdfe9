"""`packrun ls` benchmark (not a test): listing 1,000 run directories, and what the one batched
squeue call saves against one call per Slurm run, measured side by side in one run.

    python benchmarks/bench_ls.py [--runs 1000] [--slurm-share 0.3] [--squeue-ms 30]

The run directories are laid out as runs leave them (job.json, 20 rows of metrics.jsonl, two
worker logs and exit files; a share of them Slurm runs with slurm_job_id), plus sweeps of 4
points. squeue is a stub on PATH that answers after --squeue-ms (a real slurmctld round trip on
a busy cluster takes tens of milliseconds to seconds).

1. `launcher.runs.listing.scan()` over all of them (one squeue call, one process-table scan):
   wall time in all and per directory; and the whole `packrun ls` command (Python start-up
   included).
2. The same directories with one squeue call per Slurm run (what a per-run `status` loop costs),
   and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.core.rundir.job_json import spec_to_json  # noqa: E402 (after sys.path gets the checkout)
from launcher.core.spec import build_spec  # noqa: E402 (after sys.path gets the checkout)
from launcher.runs import listing as runs_ls  # noqa: E402 (after sys.path gets the checkout)


def lay_out(root: Path, n: int, slurm_share: float) -> int:
    spec = spec_to_json(build_spec({"train_dir": str(root), "val_dir": str(root), "epochs": 20,
                                    "cards_per_node": 2}, check_paths=False))
    metrics = "".join(json.dumps({"epoch": e, "train_loss": 0.5, "val_acc": 0.5 + e / 100,
                                  "epoch_time_s": 1.0, "eval_time_s": 0.1}) + "\n"
                      for e in range(1, 21))
    slurm = 0
    for i in range(n):
        d = root / f"run{i:04d}-20261201-000000"
        (d / "logs").mkdir(parents=True)
        (d / "job.json").write_text(spec)
        (d / "metrics.jsonl").write_text(metrics)
        for rank in (0, 1):
            (d / "logs" / f"worker_{rank}.log").write_text("Epoch 1/20\n" * 50)
            (d / "logs" / f"worker_{rank}.exit").write_text("0\n")
        if i < n * slurm_share:
            (d / "job.sbatch").write_text("#!/bin/bash\n")
            (d / "slurm_job_id").write_text(f"{1000 + i}\n")
            slurm += 1
        else:
            (d / "msrun.sh").write_text("#!/bin/bash\n")
    return slurm


def fake_squeue(bin_dir: Path, ms: int) -> None:
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(
        f"#!/bin/sh\nsleep {ms / 1000:.3f}\necho '1000|1000|N/A|RUNNING'\n")
    (bin_dir / "squeue").chmod(0o755)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--slurm-share", type=float, default=0.3)
    ap.add_argument("--squeue-ms", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        slurm = lay_out(root, args.runs, args.slurm_share)
        fake_squeue(Path(tmp) / "bin", args.squeue_ms)
        os.environ["PATH"] = f"{Path(tmp) / 'bin'}:{os.environ['PATH']}"

        batched = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            states = runs_ls.scan(root)
            batched.append(time.perf_counter() - t0)
        assert len(states) == args.runs
        assert sum(st.state == "running" for st in states) == 1  # job 1000, from the one call

        cli = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "launcher.cli.main", "ls", str(root)],
                               cwd=REPO, capture_output=True, text=True)
            cli.append(time.perf_counter() - t0)
            assert r.returncode == 0 and len(r.stdout.splitlines()) == args.runs + 1, r.stderr

        # one squeue call per Slurm run, the rest as before
        per_run = []
        dirs = sorted(root.iterdir())
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            live = runs_ls.live_run_dirs()
            for d in dirs:
                job_id = (d / "slurm_job_id").read_text().strip() \
                    if (d / "slurm_job_id").exists() else ""
                queue = runs_ls.squeue_states({job_id}) if job_id else {}
                runs_ls._read_state(d, queue.get(job_id), str(d) in live)
            per_run.append(time.perf_counter() - t0)

    b, c, p = (statistics.median(x) for x in (batched, cli, per_run))
    print(f"{args.runs} run directories ({slurm} Slurm runs), squeue answering in "
          f"{args.squeue_ms} ms; median of {args.repeats}")
    print("| how | wall s | ms per directory |")
    print("| --- | --- | --- |")
    print(f"| scan(), one squeue call | {b:.3f} | {1000 * b / args.runs:.2f} |")
    print(f"| `packrun ls` (whole command) | {c:.3f} | {1000 * c / args.runs:.2f} |")
    print(f"| one squeue call per Slurm run | {p:.3f} | {1000 * p / args.runs:.2f} |")
    print(f"batched is {p / b:.1f}x faster than one call per run")


if __name__ == "__main__":
    main()
