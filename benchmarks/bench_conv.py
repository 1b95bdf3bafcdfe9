"""Train-step speed of a ResNet on CPU: packrun's CPU conv path, native Conv2D, PyTorch eager.

Not a test: run it by hand, e.g.

    python3 benchmarks/bench_conv.py --variants im2col         # resnet50, 224 px, batch 8, graph
    PACKRUN_TORCH_PYTHON=/path/to/torchenv/bin/python python3 benchmarks/bench_conv.py
    python3 benchmarks/bench_conv.py --arch resnet18 --image-size 64 --batch 32 --num-classes 8

Fast variants (im2col and the PyTorch reference) alternate: ``--rounds`` rounds of
``--steps`` timed steps each, so a load change on the machine hits both alike; the
table reports medians over all timed steps and the ratio is also given per round.
Each MindSpore variant's first step (compile + run) is reported on its own. The native
Conv2D variant, which needs minutes per step at 224 px, runs after the alternation;
a variant whose first step took over a minute gets a single timed step.

The PyTorch reference (benchmarks/torch_reference.py, the same network written plainly,
CPU eager) runs in a subprocess under the interpreter named by ``--torch-python`` or
$PACKRUN_TORCH_PYTHON, else under this one if it can import torch; without torch the
row is skipped. See benchmarks/TORCH_REFERENCE.md. Both frameworks get ``--threads``
threads (default: the cores this process may run on).

The "im2col" variant is packrun's default CPU path (``cpu_conv = "im2col"``): im2col +
matmul, and Winograd F(4x4,3x3) / F(2x2,3x3) for the 3x3 stride-1 convolutions, whose tile
transforms, and the BatchNorm (+ ReLU) layers, are src/native/kernels.py's kernels. "pure" is
the same path without those kernels
(what runs where g++ is missing); like "native" (MindSpore's own Conv2D) it runs after the
alternation.

FLOPs are counted from the network itself (2 per multiply-add of every conv and dense
layer as a direct convolution computes it; the often-quoted "4.1 GFLOPs" of ResNet50 is
multiply-adds), so the GFLOP/s column compares with the matmul roofline: the best GFLOP/s
of float32 square matmuls of several sizes, each repeated, measured before and after the
steps. Winograd does fewer multiplications than that count, so the im2col row's GFLOP/s is
direct-convolution-equivalent and its share of the roofline may pass 100%.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn, ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.model import resnet
from src.model.resnet import ARCHS, build_resnet

SLOW_FIRST_STEP_S = 60.0
# Small, so repeated steps on one random batch stay finite: at 0.01 the loss of
# ResNet50 at 64 px rose from 2.3 to 9.9 in 5 steps (native and im2col alike),
# and overflowing values would no longer time the network's normal work.
LEARNING_RATE = 1e-4
# name: (cpu_conv, native Winograd kernels)
VARIANTS = {"native": (False, False), "im2col": (True, True), "pure": (True, False)}
TORCH = "pytorch"
TORCH_ENV = "PACKRUN_TORCH_PYTHON"
TORCH_SCRIPT = Path(__file__).resolve().parent / "torch_reference.py"
ROOFLINE_SIZES = (1024, 1536, 2048, 3072)


def parse_args(argv=None):
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", choices=sorted(ARCHS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of the fast variants (im2col, pytorch)")
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--variants", default="im2col,native",
                        help="comma-separated subset of: " + ",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads of both MindSpore's CPU runtime and PyTorch")
    parser.add_argument("--torch-python", default=os.environ.get(TORCH_ENV, ""),
                        help=f"interpreter with torch for the reference (default ${TORCH_ENV}, "
                             "else this one if it imports torch; 'none' skips it)")
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


def matmul_gflops(sizes=ROOFLINE_SIZES, repeats=5):
    """{size: best-of-``repeats`` GFLOP/s} of square float32 matmuls through MindSpore.

    The roofline is the best of them: one size, or one repeat, reads low whenever
    another process holds a core for a moment (a single 2048^3 measured 102-175).
    """
    result = {}
    for size in sizes:
        a = ms.Tensor(np.random.default_rng(0).standard_normal((size, size), np.float32))
        ops.matmul(a, a).asnumpy()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            ops.matmul(a, a).asnumpy()
            best = min(best, time.perf_counter() - start)
        result[size] = 2 * size ** 3 / best / 1e9
    return result


def make_train_step(args, cpu_conv, native_kernels=True):
    """TrainOneStepCell(WithLossCell(net, softmax CE), Momentum), as a training job builds it.

    ``native_kernels=False`` builds the CPU path without src/native/kernels.py's kernels.
    """
    real = resnet.winograd_ops, resnet.batchnorm_ops
    if not native_kernels:
        resnet.winograd_ops = resnet.batchnorm_ops = lambda: None
    try:
        net = build_resnet(args.arch, args.num_classes, cpu_conv=cpu_conv)
    finally:
        resnet.winograd_ops, resnet.batchnorm_ops = real
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), learning_rate=LEARNING_RATE, momentum=0.9)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    step.set_train()
    return step


class MindSporeVariant:
    """A compiled train step of packrun's network; ``run(k)`` times k steps."""

    def __init__(self, args, cpu_conv, native_kernels=True):
        ms.set_seed(0)
        self.step = make_train_step(args, cpu_conv, native_kernels)
        rng = np.random.default_rng(0)
        self.images = ms.Tensor(rng.standard_normal(
            (args.batch, 3, args.image_size, args.image_size), np.float32))
        self.labels = ms.Tensor(rng.integers(0, args.num_classes, args.batch, dtype=np.int32))
        self.first = self.run(1)[0]

    def run(self, steps):
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.step(self.images, self.labels).asnumpy()
            times.append(time.perf_counter() - start)
        return times


class TorchVariant:
    """benchmarks/torch_reference.py in a subprocess, driven one request per round."""

    def __init__(self, python, args):
        self.proc = subprocess.Popen(
            [python, str(TORCH_SCRIPT), "--arch", args.arch, "--image-size", str(args.image_size),
             "--batch", str(args.batch), "--num-classes", str(args.num_classes),
             "--threads", str(args.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self._reply()
        self.first, self.version, self.threads = (hello["first_step_s"], hello["torch"],
                                                  hello["threads"])

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{TORCH_SCRIPT.name} exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, steps):
        self.proc.stdin.write(json.dumps({"steps": steps}) + "\n")
        self.proc.stdin.flush()
        return self._reply()["times"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def torch_python(choice):
    """The interpreter for the PyTorch reference, or None to skip it."""
    if choice == "none":
        return None
    if choice:
        return choice
    return sys.executable if importlib.util.find_spec("torch") else None


def alternate(variants, rounds, steps):
    """{name: [seconds per step]}: ``rounds`` times, ``steps`` steps of each variant in turn."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            times[name].append(variant.run(steps))
    return times


def format_row(name, first, per_step, batch, step_flops, roofline):
    """One table row: first step, steady step, images/s, GFLOP/s and share of the roofline."""
    gflops = step_flops / per_step / 1e9
    return (f"{name:8} {first:12.2f} {per_step:9.3f} {batch / per_step:8.2f} {gflops:8.1f} "
            f"{100 * gflops / roofline:9.1f}%")


def median_ratio_per_round(slow, fast):
    """Median over rounds of (median step of ``slow``) / (median step of ``fast``)."""
    return statistics.median(statistics.median(a) / statistics.median(b)
                             for a, b in zip(slow, fast))


def main(argv=None):
    """Time each variant and print the comparison table."""
    args = parse_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE,
                   runtime_num_threads=args.threads)
    python = torch_python(args.torch_python)

    fwd = forward_flops_per_image(args.arch, args.image_size, args.num_classes)
    step_flops = 3 * fwd * args.batch
    roofline = matmul_gflops()
    print(f"{args.arch} {args.image_size}px batch {args.batch} mode={args.mode} "
          f"threads={args.threads}: forward {fwd / 1e9:.2f} GFLOP/image, train step "
          f"~{step_flops / 1e9:.1f} GFLOP (3x forward)", flush=True)

    fast = {}
    if "im2col" in variants:
        fast["im2col"] = MindSporeVariant(args, *VARIANTS["im2col"])
    if python:
        fast[TORCH] = TorchVariant(python, args)
        print(f"PyTorch reference: torch {fast[TORCH].version}, {fast[TORCH].threads} threads, "
              f"{python}", flush=True)
    else:
        print(f"PyTorch reference skipped: no torch here (set ${TORCH_ENV} or --torch-python; "
              "see benchmarks/TORCH_REFERENCE.md)", flush=True)
    times = alternate(fast, args.rounds, args.steps)
    firsts = {name: variant.first for name, variant in fast.items()}
    if TORCH in fast:
        fast[TORCH].close()
    for name in variants:
        if name != "im2col":
            variant = MindSporeVariant(args, *VARIANTS[name])
            firsts[name] = variant.first
            times[name] = [variant.run(1 if variant.first > SLOW_FIRST_STEP_S else args.steps)]
    after = matmul_gflops()
    best = {size: max(roofline[size], after[size]) for size in roofline}
    roofline = max(best.values())

    print(f"\n{'variant':8} {'first step s':>12} {'step s':>9} {'img/s':>8} {'GFLOP/s':>8} "
          f"{'% roofline':>10}")
    medians = {}
    for name in [*variants, TORCH] if TORCH in times else variants:
        medians[name] = statistics.median(t for chunk in times[name] for t in chunk)
        print(format_row(name, firsts[name], medians[name], args.batch, step_flops, roofline))
    sizes = ", ".join(f"{size}^3 {value:.0f}" for size, value in best.items())
    print(f"{'matmul':8} {'':12} {'':9} {'':8} {roofline:8.1f}    (best float32 matmul: {sizes})")
    if "im2col" in times:
        lo, hi = min(min(c) for c in times["im2col"]), max(max(c) for c in times["im2col"])
        spread = f"{lo:.3f}-{hi:.3f} s"
    else:
        spread = "-"
    print(f"\nmedians of {args.rounds} x {args.steps} steps; spread of im2col steps: {spread}")
    if {"native", "im2col"} <= medians.keys():
        print(f"im2col speed-up over native: {medians['native'] / medians['im2col']:.1f}x per step")
    if {TORCH, "im2col"} <= medians.keys():
        print(f"packrun (im2col) vs PyTorch eager: {medians[TORCH] / medians['im2col']:.3f}x "
              f"(PyTorch step / packrun step, >= 1 means packrun is as fast or faster; per round: "
              f"median {median_ratio_per_round(times[TORCH], times['im2col']):.3f}x)")


if __name__ == "__main__":
    main()
