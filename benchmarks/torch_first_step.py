"""The plain PyTorch script bench_first_step.py times packrun against: start, read the JPEGs of an
ImageFolder, build the network, train two steps. Runs under a separate interpreter with torch
and Pillow (benchmarks/TORCH_REFERENCE.md); prints one JSON line with the seconds since the
interpreter started (time.perf_counter() is read against the process start time) at each mark.

    python torch_first_step.py TRAIN_DIR [--arch resnet50] [--image-size 224] [--batch 8]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

STARTED = time.time()  # as close to the interpreter's start as a script gets; see since_start


def since_start() -> float:
    """Seconds since this process started (its start time from /proc, else this script's)."""
    try:
        ticks = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time() - STARTED


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    marks = {}
    import torch
    from PIL import Image
    from torch import nn
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_reference import resnet
    marks["imports"] = since_start()

    classes = sorted(p.name for p in Path(args.train_dir).iterdir() if p.is_dir())
    samples = [(f, i) for i, c in enumerate(classes)
               for f in sorted((Path(args.train_dir) / c).iterdir())]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255

    def load(path):
        img = Image.open(path).convert("RGB").resize((args.image_size, args.image_size))
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = x.view(args.image_size, args.image_size, 3).permute(2, 0, 1).float()
        return (x - mean) / std

    images = torch.stack([load(f) for f, _ in samples])
    labels = torch.tensor([label for _, label in samples])
    marks["data"] = since_start()
    torch.manual_seed(0)
    net = resnet(args.arch, len(classes)).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    marks["built"] = since_start()
    order = torch.randperm(len(samples))
    for step in range(2):
        idx = order[step * args.batch:(step + 1) * args.batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(images[idx]), labels[idx])
        loss.backward()
        opt.step()
        loss.item()
        marks[f"step{step + 1}"] = since_start()
    print(json.dumps(marks), flush=True)


if __name__ == "__main__":
    main()
