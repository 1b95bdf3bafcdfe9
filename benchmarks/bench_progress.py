"""The progress record's cost per training step, side by side with a real CPU step.

Not a test: run it by hand,

    python3 benchmarks/bench_progress.py                 # resnet18, 64 px, batch 32
    python3 benchmarks/bench_progress.py --batch 8 --rounds 5

Every rank records its progress after each step (src/training/progress.py `Recorder.step`: one
small JSON file replaced whole in logs/, and the in-process listeners); the stall watchdog, the
console line and the TensorBoard writer read it. The target (issue 26): under 1% of a CPU step.

Rounds alternate the two, so a load change on the machine hits both alike: `--steps` train steps
of ResNet18 at `--image-size` px (graph mode, packrun's CPU conv path), then `--records` calls of
Recorder.step into a real logs/ directory on this machine's temporary file system (`--dir` to
measure another, e.g. the shared file system a run directory lives on). The table gives medians
over all timed calls and the ratio per round; the exit status is 1 when the median ratio is 1%
or more.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.model.resnet import build_resnet
from src.training.progress import Recorder

TARGET = 0.01


def train_step(arch: str, image_size: int, batch: int):
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    net = build_resnet(arch, 10, cpu_conv=True)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), 1e-4, 0.9)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((batch, 3, image_size, image_size)).astype(np.float32))
    y = ms.Tensor(rng.integers(10, size=batch).astype(np.int32))
    return lambda: float(step(x, y).asnumpy())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="train steps per round")
    ap.add_argument("--records", type=int, default=500, help="progress records per round")
    ap.add_argument("--dir", default=None, help="where the run directory goes (default: /tmp)")
    args = ap.parse_args()

    step = train_step(args.arch, args.image_size, args.batch)
    t0 = time.perf_counter()
    loss = step()
    print(f"{args.arch} {args.image_size} px batch {args.batch}: first step (compile) "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        run_dir = Path(tmp)
        (run_dir / "logs").mkdir()
        seen = []
        recorder = Recorder(run_dir, 0, 1, images_per_step=args.batch,
                            lr_at=lambda s: 1e-4 * (1 + s % 7))
        recorder.subscribe(seen.append)   # one listener, as the console line is
        step_s, record_s, ratios = [], [], []
        global_step = 0
        for _ in range(args.rounds):
            round_steps = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                loss = step()
                round_steps.append(time.perf_counter() - t0)
            round_records = []
            for _ in range(args.records):
                global_step += 1
                t0 = time.perf_counter()
                recorder.step(1 + global_step // 100, 1 + global_step % 100, 100, loss)
                round_records.append(time.perf_counter() - t0)
            step_s += round_steps
            record_s += round_records
            ratios.append(statistics.median(round_records) / statistics.median(round_steps))
            seen.clear()
    step_med, record_med = statistics.median(step_s), statistics.median(record_s)
    ratio = record_med / step_med
    print(f"{'':24}{'median':>12}{'p90':>12}")
    print(f"{'train step':24}{step_med * 1e3:>10.1f}ms"
          f"{np.percentile(step_s, 90) * 1e3:>10.1f}ms")
    print(f"{'progress record':24}{record_med * 1e6:>10.1f}us"
          f"{np.percentile(record_s, 90) * 1e6:>10.1f}us")
    print(f"record / step: {ratio:.4%} (per round: "
          f"{', '.join(f'{r:.4%}' for r in ratios)}); target < {TARGET:.0%}: "
          f"{'met' if ratio < TARGET else 'MISSED'}")
    return 0 if ratio < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
