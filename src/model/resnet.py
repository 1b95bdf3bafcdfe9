"""ResNet 18/34/50/101 with the MindSpore Model Zoo's parameter names.

The layout follows ``official/cv/ResNet/src/resnet.py`` in the mindspore/models
repository (``ResidualBlockBase`` with ``bn1d``/``bn2d`` for 18/34,
``ResidualBlock`` bottlenecks for 50/101, ``down_sample_layer.{0,1}``, head
``end_point``), so Model Zoo checkpoints load by name.

On CPU, MindSpore's native Conv2D runs every kernel other than a 1x1 stride-1
one on a slow reference path (0.2-0.4 GFLOP/s measured here, against ~100
for a large matmul; a ResNet50 train step at 224 px was 38x slower than with
im2col, see benchmarks/bench_conv.py).
``cpu_conv=True`` swaps those convolutions for :class:`Im2colConv2d`, which has
the same parameters and initialisation but computes im2col + matmul, or for the
3x3 stride-1 ones Winograd's minimal filtering (fewer multiplications, same result
within float32 rounding), whose tile transforms run as native kernels where g++ can
build them (src/native/kernels.py).
"""
import math

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeNormal, HeUniform

from src.native.kernels import batchnorm_ops, dense_conv_ops, im2col_ops, pool_ops, winograd_ops

# Below this many output positions per image a single 2-D matmul over the whole
# batch beats one small matmul per image (measured forward + backward on a
# 2-core AVX-512 CPU: 2-20x faster at 4x4 down to 1x1 outputs, 2.8x at 7x7
# with 512 channels, 7-40% slower from 8x8 up).
_SMALL_MAP = 64
_MATMUL_TRANSPOSE_B = ops.MatMul(transpose_b=True)

# Winograd F(m x m, 3x3) (Lavin & Gray 2015): B^T, G, A^T for output tiles of m = 2 and 4.
# A 3x3 stride-1 convolution costs (m + 2)^2 / m^2 multiplications per output and input
# channel instead of 9 (4 for m = 2, 2.25 for m = 4), plus linear input/output transforms.
# Per layer (forward + backward, batch 8, alternating with im2col) the gain depends on how
# busy the machine is: with the other core loaded, 64ch 56px 307 -> 215 ms (m=4), 128ch
# 28px 266 -> 153 (m=4), 256ch 14px 199 -> 121 (m=2; m=4 would pad 14 to 16), 512ch 7px
# 188 -> 181 (a tie; pinned to one core m=2 won, see _winograd_tile); in quieter moments m=4
# only tied im2col at 56 and 28 px and m=2 lost there. The whole ResNet50 train step (224 px,
# batch 8, runtime_num_threads=1
# unpinned, 6 alternating rounds) is what decided: im2col 3.71 s, m=4 where exact 3.44 s,
# this rule (m=4, else m=2) 3.05 s; resnet18 at 64 px, batch 32, pinned to one core:
# 0.957 -> 0.813 s. Extending it from maps >= 8 to maps >= 4 (pinned, alternating):
# resnet50 3.129 -> 2.906 s, resnet18 at 64 px 0.596 -> 0.499 s.
_WINOGRAD = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


# Up to this many positions per map a 3x3 stride-1 convolution padded by 1 is one dense matmul
# of the image with the expanded weight (src/native/im2col.cc): on 2x2 maps 5 of im2col's 9
# taps are padding. ResNet18's layer4 at 64 px, 512 channels, batch 32, forward + backward,
# one core: im2col 16.6 ms, the dense matmuls alone 9.1 ms.
_DENSE_MAP = 4


def _winograd_tile(height, width):
    """Output tile size m for a 3x3 stride-1 conv on a height x width map, or 0 for im2col.

    m = 4 where it tiles the map exactly, m = 2 otherwise; maps under 4x4 keep im2col.
    Forward + backward pinned to one core, alternating (ms): 512ch 7px batch 8, im2col
    88.9, m=2 76.9; 256ch 4px batch 32, im2col 41.0, m=2 32.3, m=4 33.9; 512ch 2px batch 32,
    im2col 30.5, m=2 35.7.
    """
    if height < 4 or width < 4:
        return 0
    return 4 if height % 4 == 0 and width % 4 == 0 else 2


def _winograd_matrices(m):
    """(input, weight, output) transforms of F(m x m, 3x3) as Kronecker products.

    Flattening a tile row-major, B^T d B is kron(B^T, B^T) @ vec(d), and likewise for
    G g G^T and A^T M A, so each transform is one matmul.
    """
    bt, g, at = (np.array(a, np.float64) for a in _WINOGRAD[m])
    return tuple(Tensor(np.kron(a, a).astype(np.float32)) for a in (bt, g, at))


def same_pads(size, kernel, stride):
    """(before, after) padding of pad_mode 'same': the extra one goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Im2colConv2d(nn.Conv2d):
    """``nn.Conv2d`` computed as im2col (Im2Col/unfold) followed by a matmul.

    It subclasses ``nn.Conv2d`` so the parameters (``weight`` of shape
    (out, in, kh, kw), optional ``bias``), their names and their initialisation
    are exactly those of the native layer and checkpoints move freely between
    the two. Only ``group=1``, ``dilation=1`` and NCHW are supported.
    """

    def __init__(self, *args, native_kernels=True, **kwargs):
        super().__init__(*args, **kwargs)
        if self.group != 1 or self.dilation != (1, 1) or self.data_format != "NCHW":
            raise ValueError("Im2colConv2d supports group=1, dilation=1, NCHW only")
        # Winograd's transforms for a 3x3 stride-1 conv (used when it pads by 1 all round);
        # plain Tensors, not Parameters: not trained, not in checkpoints.
        self._winograd = {}
        if self.kernel_size == (3, 3) and self.stride == (1, 1):
            self._winograd = {m: _winograd_matrices(m) for m in _WINOGRAD}
        # The tile transforms as native kernels (src/native/kernels.py) when they build here;
        # `native_kernels=False`, or no compiler, keeps the pure-MindSpore formulation.
        native = winograd_ops() if self._winograd and native_kernels else None
        self._native_in = native.transform_in if native else {}
        self._native_out = native.transform_out if native else {}
        self._dense = None
        if self.kernel_size == (3, 3) and self.stride == (1, 1) and native_kernels:
            self._dense = dense_conv_ops()
        # im2col as a native kernel (src/native/im2col.cc) where the padding does not depend on
        # the input's size (pad_mode 'pad' or 'valid': ResNet18/34), else ops.unfold.
        self._im2col = None
        if native_kernels and self.pad_mode != "same":
            self._im2col = im2col_ops(self.kernel_size + self.stride + self._pads(0, 0))

    def _pads(self, height, width):
        """(top, bottom, left, right) padding, as the native Conv2D pads."""
        if self.pad_mode == "same":
            return (same_pads(height, self.kernel_size[0], self.stride[0])
                    + same_pads(width, self.kernel_size[1], self.stride[1]))
        if self.pad_mode == "valid":
            return 0, 0, 0, 0
        if isinstance(self.padding, int):
            return (self.padding,) * 4
        return tuple(self.padding)

    def construct(self, x):
        n, _, height, width = x.shape
        top, bottom, left, right = self._pads(height, width)
        kh, kw = self.kernel_size
        if (self._dense is not None and height * width <= _DENSE_MAP
                and (top, bottom, left, right) == (1, 1, 1, 1)):
            weight = self._dense.expand(self.weight, x)
            out = _MATMUL_TRANSPOSE_B(x.reshape(n, -1), weight)
            out = out.reshape(n, self.out_channels, height, width)
            if self.has_bias:
                out = self.bias_add(out, self.bias)
            return out
        tile = _winograd_tile(height, width) if self._winograd else 0
        if tile and (top, bottom, left, right) == (1, 1, 1, 1):
            if self._native_in:
                out = _winograd_conv_native(x, self.weight, tile, self._winograd[tile][1],
                                            self._native_in[tile], self._native_out[tile])
            else:
                out = _winograd_conv(x, self.weight, tile, *self._winograd[tile])
            if self.has_bias:
                out = self.bias_add(out, self.bias)
            return out
        out_h = (height + top + bottom - kh) // self.stride[0] + 1
        out_w = (width + left + right - kw) // self.stride[1] + 1
        weight = self.weight.reshape(self.out_channels, -1)
        if self._im2col is not None:
            out = _matmul_native_im2col(x, weight, self._im2col, out_h * out_w)
        else:
            out = _matmul_unfold(x, weight, self.kernel_size, self.stride,
                                 (top, bottom, left, right), out_h * out_w)
        out = out.reshape(n, self.out_channels, out_h, out_w)
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        return out


def _matmul_unfold(x, weight, kernel_size, stride, pads, length):
    """(O, K) x the columns of ``x`` -> (N, O, L), the columns from ops.unfold."""
    top, bottom, left, right = pads
    # unfold pads symmetrically; the surplus of an asymmetric padding ('same'
    # at stride 2) is concatenated as zeros. Not ops.pad: in GRAPH_MODE on CPU
    # its gradient is wrong from the second call on. Not ops.Pad: its CPU
    # kernel took ~90 ms per stride-2 conv of ResNet50 at 224 px (a third of
    # that conv's forward + backward), the concat a few.
    x = _zero_extend(x, 2, top - min(top, bottom), bottom - min(top, bottom))
    x = _zero_extend(x, 3, left - min(left, right), right - min(left, right))
    cols = ops.unfold(x, kernel_size, 1, (min(top, bottom), min(left, right)), stride)
    if length < _SMALL_MAP:
        return _matmul_whole_batch(weight, cols)
    return _matmul_per_image(weight, cols)


def _matmul_native_im2col(x, weight, im2col, length):
    """(O, K) x the columns of ``x`` -> (N, O, L), with native im2col writing the columns in the
    layout each matmul takes: one (N * L, K) matrix for small maps (no transpose of the
    columns), per image (N, K, L) otherwise."""
    if length < _SMALL_MAP:
        rows = im2col.rows(x, im2col.geometry)
        out = _MATMUL_TRANSPOSE_B(rows, weight)
        return out.reshape(x.shape[0], length, weight.shape[0]).transpose(0, 2, 1)
    return _matmul_per_image(weight, im2col.cols(x, im2col.geometry))


def _winograd_conv(x, weight, m, input_transform, weight_transform, output_transform):
    """3x3 stride-1 convolution of ``x`` (N, C, H, W), padded by 1 all round, by F(m x m, 3x3).

    The padded map is cut into overlapping (m + 2)^2 tiles m apart (unfold; the bottom and
    right are zero-extended to a multiple of m), each tile and each 3x3 filter is
    transformed, the products over input channels are (m + 2)^2 batched matmuls, and the
    output transform gives m x m outputs per tile. Everything is linear in ``x`` and
    ``weight``, so autodiff differentiates it as it is.
    """
    n, c, height, width = x.shape
    out_channels = weight.shape[0]
    size = (m + 2) * (m + 2)
    tiles_h, tiles_w = -(-height // m), -(-width // m)
    tiles = tiles_h * tiles_w
    x = _zero_extend(x, 2, 0, m * tiles_h - height)
    x = _zero_extend(x, 3, 0, m * tiles_w - width)
    d = ops.unfold(x, m + 2, 1, 1, m)  # (N, C * size, tiles), padding 1 all round
    d = d.reshape(n, c, size, tiles).transpose(2, 1, 0, 3).reshape(size, c * n * tiles)
    v = ops.matmul(input_transform, d).reshape(size, c, n * tiles)
    prod = _winograd_products(weight, weight_transform, v)  # (size, O, N * tiles)
    y = ops.matmul(output_transform, prod.reshape(size, out_channels * n * tiles))
    y = y.reshape(m, m, out_channels, n, tiles_h, tiles_w).transpose(3, 2, 4, 0, 5, 1)
    y = y.reshape(n, out_channels, m * tiles_h, m * tiles_w)
    return _crop(y, height, width)


def _winograd_conv_native(x, weight, m, weight_transform, transform_in, transform_out):
    """:func:`_winograd_conv` with the tile transforms as native kernels, in one pass each.

    ``transform_in`` reads ``x`` (N, C, H, W) and writes the transformed tiles straight in the
    (size, C, N * tiles) layout the batched matmul takes; ``transform_out`` reads the products
    as (size, O, N, tiles_h, tiles_w) and writes the (N, O, m * tiles_h, m * tiles_w) map. Their
    adjoints are their bprops, so autodiff differentiates the whole as before.
    """
    n, _, height, width = x.shape
    out_channels = weight.shape[0]
    size = (m + 2) * (m + 2)
    tiles_h, tiles_w = -(-height // m), -(-width // m)
    prod = _winograd_products(weight, weight_transform, transform_in(x))
    y = transform_out(prod.reshape(size, out_channels, n, tiles_h, tiles_w))
    return _crop(y, height, width)


def _winograd_products(weight, weight_transform, v):
    """The transformed filters (size, O, C) times the transformed tiles ``v`` (size, C, L):
    the (m + 2)^2 batched matmuls over input channels of both Winograd formulations."""
    out_channels, c = weight.shape[:2]
    u = _MATMUL_TRANSPOSE_B(weight_transform, weight.reshape(out_channels * c, 9))
    return ops.bmm(u.reshape(-1, out_channels, c), v)


def _crop(y, height, width):
    """``y`` (N, O, H', W') cut to ``height`` x ``width`` (the tiles' zero-extension dropped)."""
    if y.shape[2] != height or y.shape[3] != width:
        y = y[:, :, :height, :width]
    return y


def _zero_extend(x, axis, before, after):
    """``x`` with ``before`` / ``after`` rows of zeros concatenated along ``axis``."""
    if before:
        shape = x.shape[:axis] + (before,) + x.shape[axis + 1:]
        x = ops.concat((ops.zeros(shape, x.dtype), x), axis)
    if after:
        shape = x.shape[:axis] + (after,) + x.shape[axis + 1:]
        x = ops.concat((x, ops.zeros(shape, x.dtype)), axis)
    return x


def _matmul_per_image(weight, cols):
    """(O, K) x (N, K, L) -> (N, O, L) as a batched matmul.

    The weight is broadcast explicitly: with MatMul's implicit broadcasting
    forward + backward measured 1.5-2x slower.
    """
    n = cols.shape[0]
    weight = ops.broadcast_to(weight.reshape((1,) + weight.shape), (n,) + weight.shape)
    return ops.bmm(weight, cols)


def _matmul_whole_batch(weight, cols):
    """(O, K) x (N, K, L) -> (N, O, L) as one (N*L, K) x (K, O) matmul.

    Worth the two transposes when L is small, where per-image matmuls are too
    thin to run at speed. Putting N*L first (rather than computing (O, K) x
    (K, N*L)) and letting MatMul transpose the weight measured ~10-40% faster.
    """
    n, k, length = cols.shape
    rows = cols.transpose(0, 2, 1).reshape(n * length, k)
    out = _MATMUL_TRANSPOSE_B(rows, weight)
    return out.reshape(n, length, weight.shape[0]).transpose(0, 2, 1)


def _conv(in_channel, out_channel, kernel_size, stride, res_base, cpu_conv):
    """A Model Zoo convolution: Kaiming-normal (fan_out) init, no bias.

    ResNet18/34 (``res_base``) pad explicitly by k // 2; ResNet50/101 use
    pad_mode 'same', which pads asymmetrically at stride 2.
    """
    pad = {"pad_mode": "pad", "padding": kernel_size // 2} if res_base else {"pad_mode": "same"}
    fast = cpu_conv and (kernel_size > 1 or stride > 1)
    conv_cls = Im2colConv2d if fast else nn.Conv2d
    return conv_cls(in_channel, out_channel, kernel_size, stride=stride,
                    weight_init=HeNormal(mode="fan_out", nonlinearity="relu"), **pad)


def _bn(channel, res_base=False, cpu_conv=False, relu=False):
    """Model Zoo BatchNorm, including its res_base (ResNet18/34 stem, shortcut) variant.

    That variant's momentum=0.1 is kept as the source has it, although MindSpore
    weights the old moving statistic by momentum, so it tracks recent batches.
    On the CPU path it is :class:`NativeBatchNorm2d` where the native kernels build,
    with the ReLU after it fused in when ``relu`` (then ``fused_relu`` is set on the cell).
    """
    eps, momentum = (1e-5, 0.1) if res_base else (1e-4, 0.9)
    native = batchnorm_ops() if cpu_conv else None
    if native:
        return NativeBatchNorm2d(channel, native, relu, eps=eps, momentum=momentum)
    return nn.BatchNorm2d(channel, eps=eps, momentum=momentum)


def _fused_relu(bn):
    """Whether ``bn`` (from :func:`_bn`) already applies the ReLU that follows it."""
    return bool(getattr(bn, "fused_relu", False))


class NativeBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode pass (batch statistics) runs the native kernels
    (src/native/batchnorm.cc), optionally with the following ReLU fused in.

    Same parameters, names and initialisation (checkpoints interchangeable); the moving
    statistics are updated as MindSpore's CPU BatchNorm updates them. With fixed statistics
    (evaluation, or ``use_batch_statistics = False`` for a frozen stage) it is the native
    layer's inference pass (and a ReLU).
    """

    def __init__(self, channel, ops_, relu, **kwargs):
        super().__init__(channel, **kwargs)
        self.fused_relu = relu
        self._forward = ops_.forward[1 if relu else 0]
        self._eps = Tensor(np.array([self.eps], np.float32))

    def construct(self, x):
        batch_stats = self.training if self.use_batch_statistics is None \
            else self.use_batch_statistics
        if batch_stats:
            y, mean, var = self._forward(x, self.gamma, self.beta, self._eps)
            n, _, height, width = x.shape
            count = n * height * width
            var = var * (count / max(count - 1, 1))  # the moving variance is the unbiased one
            keep = 1.0 - self.momentum  # self.momentum is the weight of the batch (op form)
            y = ops.depend(y, ops.assign(self.moving_mean,
                                         self.moving_mean * keep + mean * self.momentum))
            y = ops.depend(y, ops.assign(self.moving_variance,
                                         self.moving_variance * keep + var * self.momentum))
            return y
        y = self.bn_infer(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)[0]
        if self.fused_relu:
            y = ops.relu(y)
        return y


def _fc(in_channel, out_channel):
    """Model Zoo head: kaiming_uniform(a=sqrt(5)) weight, zero bias.

    MindSpore's initializers draw from the RNG that ``mindspore.set_seed``
    seeds, so a fresh head is reproducible.
    """
    return nn.Dense(in_channel, out_channel, has_bias=True,
                    weight_init=HeUniform(negative_slope=math.sqrt(5)), bias_init="zeros")


class ResidualBlock(nn.Cell):
    """Bottleneck block (ResNet50/101): 1x1 -> 3x3 (strided) -> 1x1, expansion 4."""

    expansion = 4

    def __init__(self, in_channel, out_channel, stride=1, cpu_conv=False):
        super().__init__()
        channel = out_channel // self.expansion
        self.conv1 = _conv(in_channel, channel, 1, 1, False, cpu_conv)
        self.bn1 = _bn(channel, cpu_conv=cpu_conv, relu=True)
        self.conv2 = _conv(channel, channel, 3, stride, False, cpu_conv)
        self.bn2 = _bn(channel, cpu_conv=cpu_conv, relu=True)
        self.conv3 = _conv(channel, out_channel, 1, 1, False, cpu_conv)
        self.bn3 = _bn(out_channel, cpu_conv=cpu_conv)
        self.relu = nn.ReLU()
        self.relu1, self.relu2 = not _fused_relu(self.bn1), not _fused_relu(self.bn2)
        self.down_sample = stride != 1 or in_channel != out_channel
        self.down_sample_layer = None
        if self.down_sample:
            self.down_sample_layer = nn.SequentialCell(
                [_conv(in_channel, out_channel, 1, stride, False, cpu_conv),
                 _bn(out_channel, cpu_conv=cpu_conv)])

    def construct(self, x):
        identity = x
        out = self.bn1(self.conv1(x))
        if self.relu1:
            out = self.relu(out)
        out = self.bn2(self.conv2(out))
        if self.relu2:
            out = self.relu(out)
        out = self.bn3(self.conv3(out))
        if self.down_sample:
            identity = self.down_sample_layer(identity)
        return self.relu(out + identity)


class ResidualBlockBase(nn.Cell):
    """Basic block (ResNet18/34): two 3x3 convolutions; BN cells named bn1d/bn2d."""

    def __init__(self, in_channel, out_channel, stride=1, cpu_conv=False):
        super().__init__()
        self.conv1 = _conv(in_channel, out_channel, 3, stride, True, cpu_conv)
        self.bn1d = _bn(out_channel, cpu_conv=cpu_conv, relu=True)
        self.conv2 = _conv(out_channel, out_channel, 3, 1, True, cpu_conv)
        self.bn2d = _bn(out_channel, cpu_conv=cpu_conv)
        self.relu = nn.ReLU()
        self.relu1 = not _fused_relu(self.bn1d)
        self.down_sample = stride != 1 or in_channel != out_channel
        self.down_sample_layer = None
        if self.down_sample:
            self.down_sample_layer = nn.SequentialCell(
                [_conv(in_channel, out_channel, 1, stride, True, cpu_conv),
                 _bn(out_channel, True, cpu_conv)])

    def construct(self, x):
        identity = x
        out = self.bn1d(self.conv1(x))
        if self.relu1:
            out = self.relu(out)
        out = self.bn2d(self.conv2(out))
        if self.down_sample:
            identity = self.down_sample_layer(identity)
        return self.relu(out + identity)


class ResNet(nn.Cell):
    """Model Zoo ResNet V1: 7x7/2 stem, 3x3/2 max-pool, four stages, mean pool, Dense.

    ``res_base`` selects the ResNet18/34 stem (explicit padding); otherwise the
    stem uses pad_mode 'same' as in ResNet50/101.
    """

    def __init__(self, block, layer_nums, in_channels, out_channels, num_classes,
                 res_base=False, cpu_conv=False):
        super().__init__()
        self.conv1 = _conv(3, 64, 7, 2, res_base, cpu_conv)
        self.bn1 = _bn(64, res_base, cpu_conv, relu=True)
        self.relu = ops.ReLU()
        self.relu1 = not _fused_relu(self.bn1)
        self.maxpool = _stem_pool(res_base, cpu_conv)
        strides = (1, 2, 2, 2)
        stages = [_make_layer(block, num, cin, cout, stride, cpu_conv) for num, cin, cout, stride
                  in zip(layer_nums, in_channels, out_channels, strides)]
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.flatten = nn.Flatten()
        self.end_point = _fc(out_channels[3], num_classes)

    def stem(self, x):
        """conv1, bn1, relu, max-pool: the stage `freeze = "stem"` names."""
        x = self.bn1(self.conv1(x))
        if self.relu1:
            x = self.relu(x)
        return self.maxpool(x)

    def pool(self, x):
        """layer4's output -> the feature vector the head classifies."""
        return self.flatten(ops.mean(x, (2, 3), True))

    def features(self, x):
        """The backbone's output for `x`: what the head `end_point` classifies."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x)

    def construct(self, x):
        return self.end_point(self.features(x))


def _stem_pool(res_base, cpu_conv=False):
    """The 3x3/2 max-pool after the stem.

    The Model Zoo's ResNet18/34 zero-pads by 1 (``nn.Pad``) and then pools
    'valid'. Its input is a ReLU output (>= 0), so pooling with padding=1 is
    identical, and it runs 2.5x faster on CPU: ``nn.Pad`` alone took longer
    than the pool. On the CPU path, concatenating the zeros and pooling 'valid'
    is faster still (forward + backward 25 -> 17 ms at 64 px, batch 32; 87 -> 43
    ms at 224 px, batch 8): pad_mode 'pad' runs MaxPool3DWithArgmax on CPU. Where the native
    kernels build, one kernel each way does it (src/native/pool.cc: the concats, the pool and,
    backward, the pool's gradient and the slices took ~13.5 ms of a one-thread ResNet18 step
    at 64 px, batch 32). ResNet50/101 pool with pad_mode 'same'.
    """
    if res_base and cpu_conv:
        native = pool_ops()
        return _NativeStemPool(native) if native else _ZeroPaddedMaxPool()
    if res_base:
        return nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
    return nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")


class _ZeroPaddedMaxPool(nn.Cell):
    """3x3/2 max-pool of a non-negative input with padding 1: zeros concatenated, 'valid'."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="valid")

    def construct(self, x):
        return self.pool(_zero_extend(_zero_extend(x, 2, 1, 1), 3, 1, 1))


class _NativeStemPool(nn.Cell):
    """3x3/2 max-pool with padding 1 as one native kernel each way (src/native/pool.cc)."""

    def __init__(self, ops_):
        super().__init__()
        self._forward = ops_.forward

    def construct(self, x):
        return self._forward(x)


def _make_layer(block, layer_num, in_channel, out_channel, stride, cpu_conv):
    """One stage: a (possibly strided, down-sampling) block, then identity blocks."""
    blocks = [block(in_channel, out_channel, stride=stride, cpu_conv=cpu_conv)]
    blocks += [block(out_channel, out_channel, stride=1, cpu_conv=cpu_conv)
               for _ in range(1, layer_num)]
    return nn.SequentialCell(blocks)


_BASIC_CHANNELS = ([64, 64, 128, 256], [64, 128, 256, 512])
_BOTTLENECK_CHANNELS = ([64, 256, 512, 1024], [256, 512, 1024, 2048])


def resnet18(num_classes, cpu_conv=False):
    """ResNet18 (basic blocks 2-2-2-2)."""
    return ResNet(ResidualBlockBase, [2, 2, 2, 2], *_BASIC_CHANNELS, num_classes,
                  res_base=True, cpu_conv=cpu_conv)


def resnet34(num_classes, cpu_conv=False):
    """ResNet34 (basic blocks 3-4-6-3)."""
    return ResNet(ResidualBlockBase, [3, 4, 6, 3], *_BASIC_CHANNELS, num_classes,
                  res_base=True, cpu_conv=cpu_conv)


def resnet50(num_classes, cpu_conv=False):
    """ResNet50 (bottlenecks 3-4-6-3)."""
    return ResNet(ResidualBlock, [3, 4, 6, 3], *_BOTTLENECK_CHANNELS, num_classes,
                  cpu_conv=cpu_conv)


def resnet101(num_classes, cpu_conv=False):
    """ResNet101 (bottlenecks 3-4-23-3)."""
    return ResNet(ResidualBlock, [3, 4, 23, 3], *_BOTTLENECK_CHANNELS, num_classes,
                  cpu_conv=cpu_conv)


ARCHS = {"resnet18": resnet18, "resnet34": resnet34,
         "resnet50": resnet50, "resnet101": resnet101}


def build_resnet(arch: str, num_classes: int, cpu_conv: bool) -> nn.Cell:
    """Build ``arch`` (one of ``ARCHS``) with a fresh ``num_classes``-way head."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    return ARCHS[arch](num_classes, cpu_conv=cpu_conv)
