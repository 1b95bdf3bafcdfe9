"""TensorBoard writer benchmark (not a test): what rank 0's event files cost per training step,
next to a CPU training step, measured side by side in one run on this machine.

    python benchmarks/bench_tensorboard.py [--steps 30] [--image-size 32] [--batch 8]

1. A CPU training step of resnet18 (the smallest network packrun trains; 32 px and batch 8 as in
   the tests' tiny jobs: the fastest step, the worst case for the ratio), MindSpore graph mode.
2. The TensorBoard listener (src/training/tensorboard_events.TensorBoardEvents.listen) on a
   step's progress record, with `log_every_steps` 1 (every step written: the worst case) and 5
   (the default), in the same loop as the steps (alternating, so both see the same machine).
3. The per-epoch row and the recorder's own progress-file write, for scale.

Prints each per-step cost and its share of the training step; the target is under 1%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.core.rundir.progress import Event, Progress, Stage  # noqa: E402 (after sys.path gets the checkout)
from src.training.tensorboard_events import TensorBoardEvents  # noqa: E402 (after sys.path gets the checkout)


def train_step(image_size: int, batch: int):
    """A callable running one training step of resnet18 (Momentum, cross-entropy)."""
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from src.model.resnet import build_resnet
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    net = build_resnet("resnet18", 2, cpu_conv=True)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    step.set_train()
    x = ms.Tensor(np.random.default_rng(0).normal(size=(batch, 3, image_size, image_size))
                  .astype(np.float32))
    y = ms.Tensor(np.arange(batch, dtype=np.int32) % 2)
    return lambda: float(step(x, y).asnumpy())


def record(global_step: int, loss: float) -> Progress:
    return Progress(rank=0, pid=os.getpid(), attempt=1, seq=global_step, time=time.time(),
                    stage=Stage.TRAINING, event=Event.STEP, epoch=1, step=global_step,
                    steps_per_epoch=10 ** 9, global_step=global_step, loss=loss, lr=0.01,
                    head_lr=0.1, step_time_s=0.05, images_per_s=160.0)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    step = train_step(args.image_size, args.batch)
    step()  # compiles
    with tempfile.TemporaryDirectory() as tmp:
        every1 = TensorBoardEvents(Path(tmp) / "a", attempt=1, first_step=1, log_every_steps=1)
        every5 = TensorBoardEvents(Path(tmp) / "b", attempt=1, first_step=1, log_every_steps=5)
        from launcher.core.rundir.progress import write_progress
        (Path(tmp) / "c" / "logs").mkdir(parents=True)
        steps, tb1, tb5, progress = [], [], [], []
        for i in range(1, args.steps + 1):
            loss = 0.0
            t0 = time.perf_counter()
            loss = step()
            steps.append(time.perf_counter() - t0)
            # 200 listener calls per training step: microsecond costs need many samples
            for j in range(200):
                g = i * 200 + j
                tb1.append(timed(every1.listen, record(g, loss)))
                tb5.append(timed(every5.listen, record(g, loss)))
                if j % 20 == 0:
                    progress.append(timed(write_progress, Path(tmp) / "c", record(g, loss)))
        row = {"epoch": 1, "steps": 10, "train_loss": 0.5, "epoch_time_s": 3.0, "val_acc": 0.9,
               "best_acc": 0.9, "eval_time_s": 0.2}
        rows = [timed(every1.epoch_row, row) for _ in range(200)]
        size = sum(p.stat().st_size for p in (Path(tmp) / "a").rglob("events.*"))
        every1.close(finished=True)
        every5.close(finished=True)
    step_s = statistics.median(steps)
    print(f"resnet18 CPU training step, {args.image_size} px, batch {args.batch}: "
          f"median {1000 * step_s:.1f} ms over {len(steps)} steps")
    for what, samples in [("TensorBoard listener, log_every_steps 1 (every step written)", tb1),
                          ("TensorBoard listener, log_every_steps 5 (default), per step", tb5),
                          ("progress record file write (for scale)", progress),
                          ("TensorBoard epoch row (once per epoch)", rows)]:
        cost = statistics.mean(samples)
        print(f"{what}: mean {1e6 * cost:.1f} us = {100 * cost / step_s:.3f}% of a step")
    print(f"event file: {size / len(tb1):.0f} bytes per written step")


if __name__ == "__main__":
    main()
