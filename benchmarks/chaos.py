"""Chaos trials (not a test): N runs of a tiny 2-worker `packrun run`, each with one process
killed by SIGKILL at a random moment: a rank, the scheduler, msrun or the launcher itself
(tests/chaos.py). Every trial must end with the uninterrupted run's final weights, each epoch
once in metrics.jsonl, a loadable best.ckpt and nothing left running: by packrun's own restart,
or, when the launcher was killed, by `packrun run --resume RUN_DIR`. The suite runs a few fixed
trials (tests/launcher/supervise/test_no_orphans.py); this runs as many as asked and prints the
table.

    python benchmarks/chaos.py [--trials 15] [--seed 1] [--longest 20]

Exit status 0 when every trial passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.demo.digits_data import export_digits  # noqa: E402 (after sys.path gets the checkout)
from tests import chaos  # noqa: E402 (after sys.path gets the checkout)
from tests.helpers import INTERRUPTED_JOB, write_tiny_job  # noqa: E402 (after sys.path: checkout)

EPOCHS = INTERRUPTED_JOB["epochs"]   # the suite's trials' job (test_no_orphans)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--longest", type=float, default=20.0,
                    help="the latest moment, seconds after both ranks started")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        root = Path(tmp)
        export_digits(root / "data", [0, 1], size=32, train_per_class=24, val_fraction=0.1,
                      val_per_class=8)
        job = write_tiny_job(root / "chaos.toml", root / "data", **INTERRUPTED_JOB)
        reference = chaos.uninterrupted(job)
        print(f"{'trial':>5}  {'victim':<10} {'moment s':>8}  {'killed':<28} outcome", flush=True)
        trials = chaos.plan(args.seed, args.trials, longest_s=args.longest)
        for trial in trials:
            chaos.run_trial(job, trial, reference, EPOCHS)
            print(f"{trial.number:>5}  {trial.victim:<10} {trial.moment_s:>8.1f}  "
                  f"{trial.killed[:28]:<28} {trial.outcome.splitlines()[0]}", flush=True)
        ok = sum(t.ok for t in trials)
        print(f"{ok} of {len(trials)} trials ended with the uninterrupted run's weights, each "
              "epoch once, a loadable best.ckpt and nothing running")
    return 0 if ok == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
