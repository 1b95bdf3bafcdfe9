"""src/model/resnet.py: Model Zoo parameter names, forward shapes, and the im2col CPU convolution.

Sizes are small (32 px, batch 2) so the file runs in well under a minute on 2 CPU cores. Tests
that build a full network or compile a graph are in the e2e tier; the argument checks are unit.
"""

import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from src.model.resnet import ARCHS, Im2colConv2d, build_resnet, resnet18, resnet50
from tests.helpers import MODELZOO_RESNET50, conv_grads, kernel_variants, rel_err


@pytest.fixture
def pynative():
    """Eager mode: no graph compile, which keeps the whole-network tests fast (set back after
    the test: tests/conftest.py)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)


def images(batch=2, size=32, channels=3, seed=0):
    return ms.Tensor(np.random.default_rng(seed).standard_normal(
        (batch, channels, size, size), np.float32))




def param_specs(net):
    return [(p.name, tuple(p.shape)) for p in net.get_parameters()]


# --- Model Zoo layout -------------------------------------------------------------------------

@pytest.mark.e2e
def test_resnet50_parameters_match_model_zoo_names_shapes_and_order():
    expected = json.loads(MODELZOO_RESNET50.read_text())["parameters"]
    assert len(expected) == 267
    net = resnet50(1001)
    actual = [{"name": p.name, "shape": list(p.shape), "trainable": p.requires_grad}
              for p in net.get_parameters()]
    assert actual == expected
    assert [name for name, _ in net.parameters_and_names()] == [p["name"] for p in expected]


@pytest.mark.e2e
def test_resnet18_uses_model_zoo_basic_block_names():
    names = [name for name, _ in resnet18(10).parameters_and_names()]
    assert names[:10] == ["conv1.weight", "bn1.moving_mean", "bn1.moving_variance", "bn1.gamma",
                          "bn1.beta", "layer1.0.conv1.weight", "layer1.0.bn1d.moving_mean",
                          "layer1.0.bn1d.moving_variance", "layer1.0.bn1d.gamma",
                          "layer1.0.bn1d.beta"]
    assert "layer2.0.down_sample_layer.0.weight" in names
    assert "layer1.0.down_sample_layer.0.weight" not in names  # 64 -> 64, stride 1
    assert names[-2:] == ["end_point.weight", "end_point.bias"]
    assert len(names) == 102


@pytest.mark.e2e
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_forward_shape_at_32px(arch, pynative):
    net = build_resnet(arch, 10, cpu_conv=True)
    net.set_train(False)
    out = net(images()).asnumpy()
    assert out.shape == (2, 10)
    assert np.isfinite(out).all()


@pytest.mark.e2e
def test_native_forward_shape_at_64px(pynative):
    net = resnet18(7)
    net.set_train(False)
    assert net(images(batch=1, size=64)).shape == (1, 7)


@pytest.mark.e2e
def test_resnet18_stem_pool_equals_model_zoo_pad_then_valid_pool(pynative):
    relu_out = ops.relu(images(size=16, channels=4))
    model_zoo = nn.MaxPool2d(3, 2, pad_mode="valid")(
        nn.Pad(paddings=((0, 0), (0, 0), (1, 1), (1, 1)))(relu_out))
    np.testing.assert_array_equal(resnet18(10).maxpool(relu_out).asnumpy(), model_zoo.asnumpy())


@pytest.mark.e2e
def test_cpu_conv_trains_in_graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)  # set back after the test (tests/conftest.py)
    ms.set_seed(0)
    net = resnet18(4, cpu_conv=True)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss),
                               nn.Momentum(net.trainable_params(), 0.01, 0.9))
    step.set_train()
    x, labels = images(batch=4), ms.Tensor(np.arange(4, dtype=np.int32))
    losses = [float(step(x, labels).asnumpy()) for _ in range(4)]
    assert losses[-1] < losses[0]


@pytest.mark.unit
def test_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="resnet152"):
        build_resnet("resnet152", 10, cpu_conv=False)


@pytest.mark.e2e
def test_fresh_head_is_deterministic_given_set_seed():
    def head(seed):
        ms.set_seed(seed)
        return resnet18(10).end_point.weight.asnumpy()

    first, again, other = head(1), head(1), head(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Model Zoo head init: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(first).max() <= 1 / np.sqrt(512)


# --- cpu_conv network <-> native network ------------------------------------------------------

@pytest.mark.e2e
def test_cpu_conv_replaces_exactly_the_slow_convolutions():
    net = resnet50(10, cpu_conv=True)
    convs = [cell for _, cell in net.cells_and_names() if isinstance(cell, nn.Conv2d)]
    slow = [c for c in convs if c.kernel_size != (1, 1) or c.stride != (1, 1)]
    assert slow and all(isinstance(c, Im2colConv2d) for c in slow)
    fast = [c for c in convs if c not in slow]
    assert fast and not any(isinstance(c, Im2colConv2d) for c in fast)
    assert not any(isinstance(cell, Im2colConv2d)
                   for _, cell in resnet50(10).cells_and_names())


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_checkpoints_move_between_cpu_conv_and_native(arch, tmp_path, pynative):
    x = images()
    for src_cpu_conv in (False, True):
        ms.set_seed(1)
        source = build_resnet(arch, 10, cpu_conv=src_cpu_conv)
        ms.set_seed(2)
        target = build_resnet(arch, 10, cpu_conv=not src_cpu_conv)
        assert param_specs(source) == param_specs(target)
        source.set_train(True)
        source(x)  # moves the BatchNorm statistics away from their initial values
        source.set_train(False)
        target.set_train(False)
        expected = source(x).asnumpy()
        assert rel_err(target(x).asnumpy(), expected) > 1e-2  # different seeds differ

        ckpt = tmp_path / f"{arch}_{src_cpu_conv}.ckpt"
        ms.save_checkpoint(source, str(ckpt))
        not_loaded, _ = ms.load_param_into_net(target, ms.load_checkpoint(str(ckpt)))
        assert not not_loaded
        assert rel_err(target(x).asnumpy(), expected) < 1e-4


# --- Im2colConv2d == nn.Conv2d ----------------------------------------------------------------


CONV_CASES = [  # in, out, kernel, stride, pad_mode, padding, size, has_bias
    (3, 8, 7, 2, "pad", 3, 32, False),     # ResNet18/34 stem; 16x16 output: per-image matmul
    (3, 8, 7, 2, "same", 0, 32, False),    # ResNet50/101 stem; asymmetric 'same' pad (2, 3)
    (8, 16, 3, 1, "pad", 1, 6, False),     # 6x6 output: whole-batch matmul
    (8, 16, 3, 1, "same", 0, 16, False),   # 16x16 output: per-image matmul
    (8, 16, 3, 2, "pad", 1, 10, False),    # 5x5 output: whole-batch matmul
    (8, 16, 3, 2, "same", 0, 10, False),   # asymmetric (0, 1)
    (8, 16, 3, 2, "same", 0, 9, True),     # odd size, with bias
    (8, 16, 1, 2, "pad", 0, 10, False),
    (8, 16, 1, 2, "same", 0, 9, False),
    (8, 16, (3, 1), 1, "valid", 0, 7, False),
    (8, 16, 3, 1, "pad", (2, 0, 1, 3), 7, False),  # explicit asymmetric, surplus on both sides
    (8, 16, 3, 2, "pad", (1, 2, 0, 1), 18, True),  # asymmetric, 10x10 output: per image
]


# the pure formulation compiled: a matmul per image, and one over the whole batch
@pytest.mark.parametrize("mode,kernels,cin,cout,kernel,stride,pad_mode,padding,size,has_bias",
                         kernel_variants(CONV_CASES, compiled_pure={0, 2}), indirect=["mode"])
def test_im2col_conv_matches_native_outputs_and_grads(mode, kernels, cin, cout, kernel, stride,
                                                      pad_mode, padding, size, has_bias):
    kwargs = dict(stride=stride, pad_mode=pad_mode, padding=padding, has_bias=has_bias)
    ms.set_seed(3)
    native = nn.Conv2d(cin, cout, kernel, **kwargs)
    ms.set_seed(3)
    im2col = Im2colConv2d(cin, cout, kernel, native_kernels=kernels == "native", **kwargs)
    # the native im2col serves the paddings that do not depend on the input's size
    assert (im2col._im2col is not None) == (kernels == "native" and pad_mode != "same")
    assert param_specs(im2col) == param_specs(native)
    for a, b in zip(im2col.get_parameters(), native.get_parameters()):  # same init
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())

    x = images(batch=2, size=size, channels=cin)
    expected, actual = native(x), im2col(x)
    assert actual.shape == expected.shape
    assert rel_err(actual.asnumpy(), expected.asnumpy()) < 1e-4

    dout = ms.Tensor(np.random.default_rng(1).standard_normal(expected.shape, np.float32))
    (dx_expected,), dw_expected = conv_grads(native)(x, dout)
    (dx_actual,), dw_actual = conv_grads(im2col)(x, dout)
    assert rel_err(dx_actual.asnumpy(), dx_expected.asnumpy()) < 1e-4
    assert len(dw_actual) == len(dw_expected) == 1 + has_bias  # weight (, bias)
    for got, want in zip(dw_actual, dw_expected):
        assert rel_err(got.asnumpy(), want.asnumpy()) < 1e-4


@pytest.mark.e2e
def test_im2col_conv_grads_stay_right_over_repeated_graph_calls():
    # Guards the asymmetric 'same' padding: ops.pad's gradient goes wrong from the 2nd call.
    ms.set_context(mode=ms.GRAPH_MODE)  # set back after the test (tests/conftest.py)
    ms.set_seed(4)
    native = nn.Conv2d(8, 16, 3, stride=2, pad_mode="same")
    ms.set_seed(4)
    im2col = Im2colConv2d(8, 16, 3, stride=2, pad_mode="same")
    x, dout = images(size=10, channels=8), images(size=5, channels=16, seed=1)
    (dx_expected,), (dw_expected,) = conv_grads(native)(x, dout)
    grads = conv_grads(im2col)
    for _ in range(3):
        (dx,), (dw,) = grads(x, dout)
        assert rel_err(dx.asnumpy(), dx_expected.asnumpy()) < 1e-4
        assert rel_err(dw.asnumpy(), dw_expected.asnumpy()) < 1e-4


@pytest.mark.unit
def test_im2col_conv_rejects_grouped_convolution():
    with pytest.raises(ValueError, match="group"):
        Im2colConv2d(4, 4, 3, group=2)
