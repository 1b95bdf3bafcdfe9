"""Train-step speed of a ResNet on CPU: native Conv2D vs the im2col path (cpu_conv).

Not a test: run it by hand, e.g.

    python3 benchmarks/bench_conv.py                      # resnet50, 224 px, batch 8, graph
    python3 benchmarks/bench_conv.py --arch resnet18 --image-size 32 --batch 16 \
        --num-classes 10 --variants im2col --mode pynative

Each variant gets one first step (compile + run, reported on its own) and then
``--steps`` timed steps; a variant whose first step took over a minute gets a
single timed step, since the native reference kernels need minutes per step.
FLOPs are counted from the network itself (2 per multiply-add of every conv
and dense layer; the often-quoted "4.1 GFLOPs" of ResNet50 is multiply-adds),
so the GFLOP/s column compares directly with the matmul roofline.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import nn, ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.resnet import ARCHS, build_resnet  # noqa: E402

SLOW_FIRST_STEP_S = 60.0
# Small, so repeated steps on one random batch stay finite: at 0.01 the loss of
# ResNet50 at 64 px rose from 2.3 to 9.9 in 5 steps (native and im2col alike),
# and overflowing values would no longer time the network's normal work.
LEARNING_RATE = 1e-4
VARIANTS = {"native": False, "im2col": True}


def parse_args(argv=None):
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", choices=sorted(ARCHS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the first")
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--variants", default="im2col,native",
                        help="comma-separated subset of: " + ",".join(VARIANTS))
    return parser.parse_args(argv)


def forward_flops_per_image(arch, image_size, num_classes):
    """Forward FLOPs of one image, from the output shapes of every conv and dense layer.

    Output shapes are only observable eagerly, so this briefly runs the fast
    im2col network in PyNative mode (Im2colConv2d is an nn.Conv2d).
    """
    previous_mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = build_resnet(arch, num_classes, cpu_conv=True)
    net.set_train(False)
    total = []

    def count(cell, args, output):
        if isinstance(cell, nn.Conv2d):
            macs = output.size * (cell.in_channels // cell.group) * np.prod(cell.kernel_size)
        else:
            macs = output.size * cell.in_channels
        total.append(2 * int(macs))

    for _, cell in net.cells_and_names():
        if isinstance(cell, (nn.Conv2d, nn.Dense)):
            cell.register_forward_hook(count)
    net(ms.Tensor(np.zeros((1, 3, image_size, image_size), np.float32)))
    ms.set_context(mode=previous_mode)
    return sum(total)


def matmul_gflops(size=2048, repeats=10):
    """Best-of-``repeats`` GFLOP/s of a square float32 matmul: the roofline."""
    a = ms.Tensor(np.random.default_rng(0).standard_normal((size, size), np.float32))
    ops.matmul(a, a).asnumpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ops.matmul(a, a).asnumpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def make_train_step(args, cpu_conv):
    """TrainOneStepCell(WithLossCell(net, softmax CE), Momentum), as a training job builds it."""
    net = build_resnet(args.arch, args.num_classes, cpu_conv=cpu_conv)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), learning_rate=LEARNING_RATE, momentum=0.9)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    step.set_train()
    return step


def time_variant(args, cpu_conv):
    """(first-step seconds, mean seconds of the timed steps) for one variant."""
    ms.set_seed(0)
    step = make_train_step(args, cpu_conv)
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal(
        (args.batch, 3, args.image_size, args.image_size), np.float32))
    labels = ms.Tensor(rng.integers(0, args.num_classes, args.batch, dtype=np.int32))

    def one_step():
        start = time.perf_counter()
        step(images, labels).asnumpy()
        return time.perf_counter() - start

    first = one_step()
    steps = 1 if first > SLOW_FIRST_STEP_S else args.steps
    timed = [one_step() for _ in range(steps)]
    return first, sum(timed) / len(timed)


def format_row(name, first, per_step, batch, step_flops, roofline):
    """One table row: first step, steady step, images/s, GFLOP/s and share of the roofline."""
    gflops = step_flops / per_step / 1e9
    return (f"{name:8} {first:12.2f} {per_step:9.3f} {batch / per_step:8.2f} {gflops:8.1f} "
            f"{100 * gflops / roofline:9.1f}%")


def main(argv=None):
    """Time each variant and print the comparison table, one row as each finishes."""
    args = parse_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE)

    fwd = forward_flops_per_image(args.arch, args.image_size, args.num_classes)
    step_flops = 3 * fwd * args.batch
    roofline = matmul_gflops()
    print(f"{args.arch} {args.image_size}px batch {args.batch} mode={args.mode}: forward "
          f"{fwd / 1e9:.2f} GFLOP/image, train step ~{step_flops / 1e9:.1f} GFLOP (3x forward)")
    print(f"\n{'variant':8} {'first step s':>12} {'step s':>9} {'img/s':>8} {'GFLOP/s':>8} "
          f"{'% roofline':>10}", flush=True)
    step_times = {}
    for name in variants:
        first, step_times[name] = time_variant(args, VARIANTS[name])
        print(format_row(name, first, step_times[name], args.batch, step_flops, roofline),
              flush=True)
    print(f"{'matmul':8} {'':12} {'':9} {'':8} {roofline:8.1f}    (2048^3 float32 roofline)")
    if {"native", "im2col"} <= step_times.keys():
        speedup = step_times["native"] / step_times["im2col"]
        print(f"\nim2col speed-up over native: {speedup:.1f}x per step")


if __name__ == "__main__":
    main()
