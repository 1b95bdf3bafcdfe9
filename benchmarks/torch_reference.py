"""PyTorch CPU eager reference for bench_conv.py: the same ResNet train step, written plainly.

Runs under a *separate* interpreter that has torch (see benchmarks/TORCH_REFERENCE.md); torch
is never a packrun dependency. bench_conv.py starts it as a subprocess and drives it over
stdin/stdout so the two frameworks can alternate inside one benchmark run:

    -> {"steps": 3}                    (one JSON request per line)
    <- {"times": [1.81, 1.79, 1.80]}   (seconds per train step, one JSON reply per line)

The network is the Model Zoo's ResNet V1 (stride on the 3x3 of a bottleneck, BatchNorm after
every conv, mean pool, Dense head), trained with softmax cross-entropy and SGD momentum 0.9,
one fixed random batch, as bench_conv.py trains the MindSpore one.
"""
import argparse
import json
import sys
import time

import torch
from torch import nn

LEARNING_RATE = 1e-4


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, cout, stride):
        super().__init__()
        mid = cout // 4
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


ARCHS = {
    "resnet18": (Basic, [2, 2, 2, 2], [64, 64, 128, 256], [64, 128, 256, 512]),
    "resnet34": (Basic, [3, 4, 6, 3], [64, 64, 128, 256], [64, 128, 256, 512]),
    "resnet50": (Bottleneck, [3, 4, 6, 3], [64, 256, 512, 1024], [256, 512, 1024, 2048]),
    "resnet101": (Bottleneck, [3, 4, 23, 3], [64, 256, 512, 1024], [256, 512, 1024, 2048]),
}


def resnet(arch, num_classes):
    block, nums, cins, couts = ARCHS[arch]
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    for num, cin, cout, stride in zip(nums, cins, couts, (1, 2, 2, 2)):
        layers.append(block(cin, cout, stride))
        layers += [block(cout, cout, 1) for _ in range(1, num)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(couts[-1], num_classes)]
    return nn.Sequential(*layers)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", choices=sorted(ARCHS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    parser.add_argument("--steps", type=int, default=0,
                        help="run this many timed steps and exit (0: serve requests on stdin)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = resnet(args.arch, args.num_classes).train()
    opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    labels = torch.randint(0, args.num_classes, (args.batch,))

    def step():
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(images), labels)
        loss.backward()
        opt.step()
        loss.item()
        return time.perf_counter() - start

    first = step()  # warm-up: allocator, oneDNN primitive caches
    hello = {"ready": True, "first_step_s": first, "threads": torch.get_num_threads(),
             "torch": torch.__version__}
    if args.steps:
        print(json.dumps({**hello, "times": [step() for _ in range(args.steps)]}), flush=True)
        return
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps({"times": [step() for _ in range(int(request["steps"]))]}), flush=True)


if __name__ == "__main__":
    main()
