"""src/model/resnet.py's CPU fast path beyond im2col: Winograd for 3x3 stride-1 convolutions, and
the ResNet18/34 stem pool with concatenated zero padding.

Outputs and gradients must equal nn.Conv2d's on every tiling the ResNets meet (m = 4 on
maps that are multiples of 4, m = 2 with zero-extension on the others), with the same
parameters, so checkpoints stay interchangeable. Small shapes: seconds on 2 cores.
"""

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from src.model import resnet
from src.model.resnet import Im2colConv2d, _winograd_tile
from tests.helpers import conv_grads, kernel_variants, rel_err

# Tiers: the tests that take the `mode` fixture get theirs from it (graph: e2e, pynative:
# unit); the others say theirs.


def tensor(shape, seed):
    return ms.Tensor(np.random.default_rng(seed).standard_normal(shape, np.float32))


@pytest.mark.unit
def test_tile_choice():
    assert _winograd_tile(56, 56) == _winograd_tile(28, 28) == _winograd_tile(16, 16) == 4
    assert _winograd_tile(8, 8) == _winograd_tile(4, 4) == _winograd_tile(4, 8) == 4
    assert _winograd_tile(14, 14) == _winograd_tile(9, 12) == _winograd_tile(7, 7) == 2
    assert _winograd_tile(2, 2) == _winograd_tile(3, 16) == _winograd_tile(1, 1) == 0


CASES = [  # in, out, height, width, conv kwargs
    (8, 16, 16, 16, {"pad_mode": "same"}),                # m = 4 (ResNet50/101)
    (8, 16, 12, 8, {"pad_mode": "pad", "padding": 1}),    # m = 4, not square (ResNet18/34)
    (8, 16, 10, 10, {"pad_mode": "pad", "padding": 1}),   # m = 2, exact
    (8, 16, 9, 12, {"pad_mode": "same", "has_bias": True}),  # m = 2, zero-extended rows
    (8, 16, 13, 13, {"pad_mode": "same"}),                # m = 2, zero-extended both ways
    (256, 32, 8, 8, {"pad_mode": "same"}),                # m = 4, long channel sums
    (8, 16, 4, 4, {"pad_mode": "pad", "padding": 1}),     # m = 4, one tile (resnet18 64 px)
    (8, 16, 7, 7, {"pad_mode": "same"}),                  # m = 2, 7 -> 8 (ResNet50 layer4)
    (20, 18, 20, 20, {"pad_mode": "same"}),               # m = 4, 16 tiles: register transposes
    (8, 16, 18, 17, {"pad_mode": "pad", "padding": 1}),   # m = 2, zero-extended, 81 tiles
]


# the pure formulation compiled: m = 4, m = 2 exact, m = 2 zero-extended
@pytest.mark.parametrize("mode,kernels,cin,cout,height,width,kwargs",
                         kernel_variants(CASES, compiled_pure={0, 2, 4}), indirect=["mode"])
def test_winograd_matches_native_outputs_and_grads(mode, kernels, cin, cout, height, width,
                                                   kwargs):
    assert _winograd_tile(height, width)  # the case exercises the Winograd path
    ms.set_seed(5)
    native = nn.Conv2d(cin, cout, 3, **kwargs)
    ms.set_seed(5)
    fast = Im2colConv2d(cin, cout, 3, native_kernels=kernels == "native", **kwargs)
    assert bool(fast._native_in) == (kernels == "native")  # the formulation under test runs
    assert ([(p.name, p.shape) for p in fast.get_parameters()]
            == [(p.name, p.shape) for p in native.get_parameters()])  # no transform Parameters

    x = tensor((2, cin, height, width), 0)
    expected = native(x)
    actual = fast(x)
    assert actual.shape == expected.shape
    assert rel_err(actual.asnumpy(), expected.asnumpy()) < 1e-4

    dout = tensor(expected.shape, 1)
    (dx_expected,), dw_expected = conv_grads(native)(x, dout)
    grads = conv_grads(fast)
    for _ in range(2):  # a graph called again still differentiates right
        (dx_actual,), dw_actual = grads(x, dout)
        assert rel_err(dx_actual.asnumpy(), dx_expected.asnumpy()) < 1e-4
        assert len(dw_actual) == len(dw_expected)
        for got, want in zip(dw_actual, dw_expected):
            assert rel_err(got.asnumpy(), want.asnumpy()) < 1e-4


@pytest.mark.parametrize("mode,kernels,height,width,kwargs", kernel_variants(
    [(2, 2, {"pad_mode": "pad", "padding": 1}), (1, 2, {"pad_mode": "same", "has_bias": True})],
    compiled_pure={0}), indirect=["mode"])
def test_tiny_maps_take_one_dense_matmul_with_native_outputs_and_grads(mode, kernels, height,
                                                                       width, kwargs):
    ms.set_seed(5)
    native = nn.Conv2d(12, 20, 3, **kwargs)
    ms.set_seed(5)
    fast = Im2colConv2d(12, 20, 3, native_kernels=kernels == "native", **kwargs)
    assert (fast._dense is not None) == (kernels == "native")
    x = tensor((3, 12, height, width), 0)
    expected = native(x)
    assert rel_err(fast(x).asnumpy(), expected.asnumpy()) < 1e-4
    dout = tensor(expected.shape, 1)
    (dx_expected,), dw_expected = conv_grads(native)(x, dout)
    (dx_actual,), dw_actual = conv_grads(fast)(x, dout)
    assert rel_err(dx_actual.asnumpy(), dx_expected.asnumpy()) < 1e-4
    for got, want in zip(dw_actual, dw_expected, strict=True):
        assert rel_err(got.asnumpy(), want.asnumpy()) < 1e-4


@pytest.mark.unit
def test_other_padding_keeps_im2col():
    # 3x3 stride 1 without padding by 1 ("valid", or padding 2) is not Winograd's case here.
    for kwargs in ({"pad_mode": "valid"}, {"pad_mode": "pad", "padding": 2}):
        ms.set_seed(6)
        native = nn.Conv2d(4, 8, 3, **kwargs)
        ms.set_seed(6)
        fast = Im2colConv2d(4, 8, 3, **kwargs)
        x = tensor((2, 4, 12, 12), 2)
        assert rel_err(fast(x).asnumpy(), native(x).asnumpy()) < 1e-4


@pytest.mark.e2e  # builds and runs two ResNet18s (full-size networks)
@pytest.mark.parametrize("kernels", ["native", "pure"])
def test_resnet_shapes_take_the_winograd_path(monkeypatch, kernels):
    calls = []
    name = "_winograd_conv_native" if kernels == "native" else "_winograd_conv"
    real = getattr(resnet, name)

    def counting(x, weight, m, *transforms):
        calls.append((tuple(x.shape), m))
        return real(x, weight, m, *transforms)

    monkeypatch.setattr(resnet, name, counting)
    if kernels == "pure":
        monkeypatch.setattr(resnet, "winograd_ops", lambda: None)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # construct runs as Python, so the patch is seen
    net = resnet.resnet18(10, cpu_conv=True)
    net.set_train(False)
    net(tensor((1, 3, 64, 64), 3))  # maps 16 (layer1), 8 (layer2), 4 (layer3), 2
    assert sorted(set(calls)) == [((1, 64, 16, 16), 4), ((1, 128, 8, 8), 4),
                                  ((1, 256, 4, 4), 4)]
    assert len(calls) == 4 + 3 + 3  # layer1: 4 convs; layer2, layer3: 3 (one is stride 2)


class PoolGrad(nn.Cell):
    """d/dx of pool(relu(x)), as the stem differentiates it."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool
        self.grad = ops.GradOperation(sens_param=True)

    def forward(self, x):
        return self.pool(ops.relu(x))

    def construct(self, x, dout):
        return self.grad(self.forward)(x, dout)


@pytest.mark.parametrize("kernels", ["native", "pure"])
@pytest.mark.parametrize("size", [16, 15])
def test_cpu_stem_pool_equals_the_native_one(mode, size, kernels, monkeypatch):
    if kernels == "pure":
        monkeypatch.setattr(resnet, "pool_ops", lambda: None)
    # the pools resnet18 builds (ResNet(...).maxpool), without building two networks
    native, fast = resnet._stem_pool(True), resnet._stem_pool(True, cpu_conv=True)
    assert type(fast) is not type(native)  # the CPU path has its own pool
    assert isinstance(fast, resnet._NativeStemPool) == (kernels == "native")
    x = tensor((2, 4, size, size), 7)
    expected = native(ops.relu(x))
    assert fast(ops.relu(x)).shape == expected.shape
    np.testing.assert_array_equal(fast(ops.relu(x)).asnumpy(), expected.asnumpy())
    dout = tensor(expected.shape, 8)
    want = PoolGrad(native)(x, dout).asnumpy()
    grad = PoolGrad(fast)
    for _ in range(2):
        assert rel_err(grad(x, dout).asnumpy(), want) < 1e-5


class _Loss(nn.Cell):
    """sum(net(x) * w): a gradient that reaches every output element differently."""

    def __init__(self, net, w):
        super().__init__()
        self.net, self.w = net, w

    def construct(self, x):
        return (self.net(x) * self.w).sum()


class _BnRelu(nn.Cell):
    def __init__(self, bn, relu):
        super().__init__()
        self.bn, self.relu = bn, relu

    def construct(self, x):
        y = self.bn(x)
        return ops.relu(y) if self.relu else y


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape,res_base", [((4, 3, 5, 6), False), ((2, 8, 7, 7), True)])
def test_native_batchnorm_equals_the_native_layer(mode, relu, shape, res_base):
    """Output, gradients and moving statistics, training and evaluating, frozen too."""
    x = ms.Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3 + 1)
    w = tensor(shape, 1)
    kwargs = {"eps": 1e-5, "momentum": 0.1} if res_base else {"eps": 1e-4, "momentum": 0.9}
    fused = resnet._bn(shape[1], res_base, cpu_conv=True, relu=relu)
    assert isinstance(fused, resnet.NativeBatchNorm2d) and resnet._fused_relu(fused) == relu
    nets = [_BnRelu(nn.BatchNorm2d(shape[1], **kwargs), relu), _BnRelu(fused, False)]
    results = []
    for net in nets:
        net.bn.gamma.set_data(ms.Tensor(np.linspace(0.5, 1.5, shape[1]).astype(np.float32)))
        net.bn.beta.set_data(ms.Tensor(np.linspace(-0.2, 0.3, shape[1]).astype(np.float32)))
        net.set_train()
        loss = _Loss(net, w)
        _, (dx, (dgamma, dbeta)) = ms.value_and_grad(loss, 0, net.trainable_params())(x)
        out = net(x)
        stats = net.bn.moving_mean.asnumpy(), net.bn.moving_variance.asnumpy()
        net.set_train(False)
        evaluated = net(x)
        net.set_train()
        net.bn.use_batch_statistics = False  # a frozen stage (src/training/transfer.py)
        frozen = net(x)
        results.append([a.asnumpy() if isinstance(a, ms.Tensor) else a for a in
                         (out, dx, dgamma, dbeta, *stats, evaluated, frozen)])
    names = ["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance", "eval", "frozen"]
    for name, expected, actual in zip(names, *results):
        assert rel_err(actual, expected) < 1e-5, name


@pytest.mark.e2e  # builds a ResNet
def test_the_cpu_resnet_uses_native_batchnorm_with_the_same_parameters():
    fast = resnet.resnet18(10, cpu_conv=True)
    slow = resnet.resnet18(10, cpu_conv=False)
    assert ([(p.name, p.shape) for p in fast.get_parameters()]
            == [(p.name, p.shape) for p in slow.get_parameters()])
    bns = [c for _, c in fast.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
    assert bns and all(isinstance(c, resnet.NativeBatchNorm2d) for c in bns)
    assert sum(resnet._fused_relu(c) for c in bns) == 1 + 8  # the stem's, and each block's first
    assert not any(isinstance(c, resnet.NativeBatchNorm2d) for _, c in slow.cells_and_names())
