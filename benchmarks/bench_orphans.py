"""No-orphans benchmark (not a test): after kill -9 of each kind of launcher, how long until
nothing it started runs and its run directory is free again (launcher/supervise/lifeline.py).
The issue's figure: within 10 s; before the lifeline, msrun and the workers of a killed `packrun
run` kept running, unlocked, until their job ended (14-15 s for a tiny job, forever for a real
one).

    python benchmarks/bench_orphans.py [--repeats 3] [--launchers run,debug,node-launch,batch]

Each launcher starts a tiny 2-worker job (1 worker for debug; the batch program runs job.sbatch
with a stand-in srun that runs node 0's msrun.sh itself), is killed with SIGKILL 2 s after its
ranks started, and the time from the kill until no process names the run directory and its lock
can be taken is measured. Prints one row per launcher: the processes running at the kill, the
median and the longest time, and whether the longest is within 10 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.demo.digits_data import export_digits  # noqa: E402 (after sys.path gets the checkout)
from tests import chaos  # noqa: E402 (after sys.path gets the checkout)
from tests.helpers import write_tiny_job  # noqa: E402 (after sys.path gets the checkout)

TARGET_S = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--launchers", default=",".join(chaos.LAUNCHERS))
    args = ap.parse_args()
    kinds = [k for k in args.launchers.split(",") if k]
    unknown = set(kinds) - set(chaos.LAUNCHERS)
    if unknown:
        ap.error(f"unknown launcher(s) {sorted(unknown)}; choose from {chaos.LAUNCHERS}")
    with tempfile.TemporaryDirectory(prefix="bench-orphans-") as tmp:
        root = Path(tmp)
        export_digits(root / "data", [0, 1], size=32, train_per_class=24, val_fraction=0.1,
                      val_per_class=8)
        job = write_tiny_job(root / "orphans.toml", root / "data", epochs=50,
                             num_parallel_workers=1)
        print(f"{'launcher':<12} {'processes':>9} {'median s':>9} {'max s':>7}  "
              f"within {TARGET_S:.0f} s")
        worst = 0.0
        for kind in kinds:
            times, running = [], []
            for i in range(args.repeats):
                launch = chaos.start_launcher(kind, job, root / f"{kind}-{i}",
                                              f"{kind.replace('-', '')}{i}")
                _, seconds, n = chaos.kill_launcher(launch)
                times.append(seconds)
                running.append(n)
            worst = max(worst, *times)
            print(f"{kind:<12} {max(running):>9} {statistics.median(times):>9.1f} "
                  f"{max(times):>7.1f}  {'yes' if max(times) <= TARGET_S else 'NO'}",
                  flush=True)
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
