"""src/native/kernels.py: the Winograd tile transforms as native kernels, and their fallback.

Each kernel is held to a numpy reference (the tiles and Kronecker transforms written out),
each adjoint to its kernel by the dot-product identity <K x, y> = <x, K^T y>, on maps that
tile exactly and maps that are zero-extended. CI has g++ (.ci/run installs it), so the
library must build here; without a compiler packrun falls back, which is tested too.
"""

import mindspore as ms
import numpy as np
import pytest

from launcher.core import native_digest
from src.model.resnet import _WINOGRAD
from src.native import kernels as native_kernels
from tests.helpers import need_tool

pytestmark = pytest.mark.unit

# Channel counts under, at and over the kernels' groups of 16 channels.
SHAPES = [(2, 3, 8, 8), (1, 2, 7, 7), (2, 2, 9, 12), (1, 1, 4, 4), (1, 2, 13, 5),
          (2, 18, 6, 5), (1, 32, 4, 4), (1, 20, 16, 17)]


@pytest.fixture(scope="module")
def wino():
    ops = native_kernels.winograd_ops()
    assert ops is not None, "the native kernels did not build (is g++ installed? see stderr)"
    return ops


def reference_in(x, m):
    """numpy: tiles of the padded map, B^T d B, laid out (size, C, N * tiles)."""
    bt = np.array(_WINOGRAD[m][0], np.float64)
    n, c, h, w = x.shape
    th, tw = -(-h // m), -(-w // m)
    padded = np.zeros((n, c, th * m + 2, tw * m + 2))
    padded[:, :, 1:h + 1, 1:w + 1] = x
    r = m + 2
    v = np.zeros((r, r, c, n, th, tw))
    for i in range(th):
        for j in range(tw):
            d = padded[:, :, i * m:i * m + r, j * m:j * m + r]  # (n, c, r, r)
            v[:, :, :, :, i, j] = np.einsum("ai,ncij,bj->abcn", bt, d, bt)
    return v.reshape(r * r, c, n * th * tw)


def reference_out(t, m):
    """numpy: A^T M A of every tile, placed at (th * m, tw * m)."""
    at = np.array(_WINOGRAD[m][2], np.float64)
    _, o, n, th, tw = t.shape
    r = m + 2
    tiles = t.reshape(r, r, o, n, th, tw)
    y = np.einsum("pa,abonij,qb->nopiqj", at, tiles, at)  # (n, o, m, th, m, tw)
    return y.transpose(0, 1, 3, 2, 5, 4).reshape(n, o, th * m, tw * m)


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", SHAPES)
def test_input_transform_and_its_adjoint(wino, m, shape):
    x = rand(shape, 0)
    v = wino.transform_in[m](ms.Tensor(x)).asnumpy()
    expected = reference_in(x, m)
    assert v.shape == expected.shape
    np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-4)
    dv = rand(v.shape, 1)
    dx = wino.adjoint_in[m](ms.Tensor(dv), ms.Tensor(x)).asnumpy()  # x: for its shape
    assert dx.shape == x.shape
    assert np.isclose(np.vdot(v.astype(np.float64), dv), np.vdot(x.astype(np.float64), dx),
                      rtol=1e-4)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("tiles", [(2, 3, 2, 2), (1, 2, 1, 3), (2, 1, 4, 1), (20, 2, 2, 1),
                                   (17, 1, 4, 5)])
def test_output_transform_and_its_adjoint(wino, m, tiles):
    o, n, th, tw = tiles
    t = rand(((m + 2) ** 2, o, n, th, tw), 2)
    y = wino.transform_out[m](ms.Tensor(t)).asnumpy()
    np.testing.assert_allclose(y, reference_out(t, m), rtol=1e-5, atol=1e-3)
    dy = rand(y.shape, 3)
    dt = wino.adjoint_out[m](ms.Tensor(dy)).asnumpy()
    assert dt.shape == t.shape
    assert np.isclose(np.vdot(y.astype(np.float64), dy), np.vdot(t.astype(np.float64), dt),
                      rtol=1e-4)


@pytest.fixture
def fresh_caches():
    """The library and its op sets looked up anew, and again after the test."""
    caches = (native_kernels.library, native_kernels.winograd_ops, native_kernels.batchnorm_ops)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def test_without_a_compiler_packrun_falls_back_and_says_so_once(monkeypatch, capsys,
                                                                 fresh_caches):
    monkeypatch.setattr(native_kernels.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="no g\\+\\+ on PATH"):
        native_kernels.build()
    assert native_kernels.winograd_ops() is None
    assert native_kernels.batchnorm_ops() is None
    assert native_kernels.winograd_ops() is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "slower pure-MindSpore formulation" in err[0] and "g++" in err[0]


def test_packrun_native_0_forces_the_pure_path(monkeypatch, fresh_caches):
    monkeypatch.setenv(native_kernels.DISABLE_ENV, "0")
    assert native_kernels.winograd_ops() is None and native_kernels.batchnorm_ops() is None


def test_an_unwritable_build_dir_falls_through_to_the_next(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(native_kernels, "_build_dirs",
                        lambda: [blocker / "build", tmp_path / "fallback"])
    small = tmp_path / "one.cc"  # a real g++ build, of one function: the kernels' take seconds
    small.write_text('extern "C" int one() { return 1; }\n')
    monkeypatch.setattr(native_kernels, "_sources", lambda: [small])
    library = native_kernels.build()
    assert library.parent == tmp_path / "fallback" and library.is_file()
    assert not list((tmp_path / "fallback").glob(".*.tmp"))  # compiled, then renamed
    assert native_kernels.build() == library  # built once, then reused


def test_the_library_name_follows_the_source_and_the_cpu(monkeypatch):
    compiler = need_tool(native_kernels.COMPILER, "to build the native kernels")
    first = native_kernels._library_name(compiler)
    monkeypatch.setattr(native_kernels, "_cpu_identity", lambda: "model name: another cpu")
    assert native_kernels._library_name(compiler) != first


def test_the_compiler_is_asked_its_version_once_per_binary(tmp_path, monkeypatch):
    compiler = tmp_path / "g++"
    compiler.write_text("#!/bin/sh\necho \"g++ (stub) 1.0\"\necho asked >> \"$0.log\"\n")
    compiler.chmod(0o755)
    monkeypatch.setattr(native_digest, "cache_dir", lambda: tmp_path / "cache")
    for _ in range(3):
        assert native_digest.compiler_version(str(compiler)) == "g++ (stub) 1.0\n"
    assert (tmp_path / "g++.log").read_text() == "asked\n"  # once, then the stamp
    compiler.write_text(compiler.read_text().replace("1.0", "2.0.1"))  # an upgrade
    assert native_digest.compiler_version(str(compiler)) == "g++ (stub) 2.0.1\n"
    assert (tmp_path / "g++.log").read_text() == "asked\nasked\n"


def reference_pool(x):
    """numpy: 3x3 stride-2 max-pool padded by 1 with -inf; and each output's argmax, the first
    (row-major) position of its window holding the maximum."""
    n, c, h, w = x.shape
    oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    padded = np.full((n, c, h + 2, w + 2), -np.inf)
    padded[:, :, 1:-1, 1:-1] = x
    windows = np.stack([padded[:, :, i:i + 2 * oh:2, j:j + 2 * ow:2]
                        for i in range(3) for j in range(3)], -1)  # (n, c, oh, ow, 9)
    return windows.max(-1), windows.argmax(-1)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 6), (1, 1, 1, 1), (2, 2, 2, 5)])
def test_the_stem_pool_and_its_gradient(shape):
    pool = native_kernels.pool_ops()
    assert pool is not None
    x = rand(shape, 4)
    if min(shape[2:]) > 1:  # a tie inside one window: the first position wins
        x[0, 0, 0, :2] = x[0, 0, 1, 0] = 9.0
    y, argmax = reference_pool(x)
    np.testing.assert_array_equal(pool.forward(ms.Tensor(x)).asnumpy(), y)
    dy = rand(y.shape, 5)
    def forward(inputs):
        return pool.forward(inputs)

    grad = ms.ops.GradOperation(sens_param=True)(forward)
    dx = grad(ms.Tensor(x), ms.Tensor(dy)).asnumpy()
    expected = np.zeros((shape[0], shape[1], shape[2] + 2, shape[3] + 2))
    n_, c_, oh, ow = y.shape
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    a = argmax[n, c, i, j]
                    expected[n, c, 2 * i + a // 3, 2 * j + a % 3] += dy[n, c, i, j]
    np.testing.assert_allclose(dx, expected[:, :, 1:-1, 1:-1], rtol=1e-6, atol=1e-6)


def reference_cols(x, geometry):
    """numpy: im2col's (N, C * kh * kw, OH * OW) columns, padding read as zeros."""
    kh, kw, sh, sw, top, bottom, left, right = geometry
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    cols = np.stack([padded[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
                     for i in range(kh) for j in range(kw)], 2)  # (n, c, taps, oh, ow)
    return cols.reshape(n, c * kh * kw, oh * ow)


GEOMETRIES = [(7, 7, 2, 2, 3, 3, 3, 3), (3, 3, 2, 2, 1, 1, 1, 1), (1, 1, 2, 2, 0, 0, 0, 0),
              (3, 3, 1, 1, 1, 1, 1, 1), (3, 1, 1, 2, 2, 0, 1, 3), (3, 3, 2, 1, 0, 1, 2, 0)]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("shape", [(2, 3, 9, 8), (1, 2, 2, 2), (1, 20, 5, 7)])
def test_im2col_in_both_layouts_and_their_adjoints(geometry, shape):
    im2col = native_kernels.im2col_ops(geometry)
    assert im2col is not None
    x = rand(shape, 6)
    expected = reference_cols(x, geometry)
    n, k, length = expected.shape
    cols = im2col.cols(ms.Tensor(x), im2col.geometry).asnumpy()
    np.testing.assert_array_equal(cols, expected)
    rows = im2col.rows(ms.Tensor(x), im2col.geometry).asnumpy()
    np.testing.assert_array_equal(rows, expected.transpose(0, 2, 1).reshape(n * length, k))
    for layout, out in (("cols", cols), ("rows", rows)):
        forward = getattr(im2col, layout)

        def f(inputs, g, forward=forward):
            return forward(inputs, g)

        dout = rand(out.shape, 7)
        dx = ms.ops.GradOperation(sens_param=True)(f)(ms.Tensor(x), im2col.geometry,
                                                      ms.Tensor(dout)).asnumpy()
        assert dx.shape == x.shape
        assert np.isclose(np.vdot(out.astype(np.float64), dout),
                          np.vdot(x.astype(np.float64), dx), rtol=1e-4)


def test_two_geometries_on_inputs_of_one_shape_keep_their_own_output_shapes():
    # PyNative caches an op's output shape by its attributes and input shapes: the geometry
    # must be among them (layer2's 3x3 and 1x1 stride-2 convs read the same input).
    ms.set_context(mode=ms.PYNATIVE_MODE)  # set back after the test (tests/conftest.py)
    x = ms.Tensor(rand((2, 8, 10, 10), 8))
    for geometry, k in (((3, 3, 2, 2, 1, 1, 1, 1), 72), ((1, 1, 2, 2, 0, 0, 0, 0), 8)):
        im2col = native_kernels.im2col_ops(geometry)
        assert im2col.rows(x, im2col.geometry).shape == (50, k)
        assert im2col.cols(x, im2col.geometry).shape == (2, k, 25)


def ctypes_kernel(name):
    """`name` from the built library, callable as f(inputs, outputs) on numpy arrays the way
    MindSpore's aot Custom ops call it (no MindSpore involved, so threads and fork are plain)."""
    import ctypes
    function = getattr(ctypes.CDLL(str(native_kernels.library())), name)

    def call(inputs, outputs):
        arrays = list(inputs) + list(outputs)
        count = len(arrays)
        shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
        status = function(
            count, (ctypes.c_void_p * count)(*[a.ctypes.data for a in arrays]),
            (ctypes.c_int * count)(*[a.ndim for a in arrays]),
            (ctypes.POINTER(ctypes.c_int64) * count)(
                *[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in shapes]),
            (ctypes.c_char_p * count)(*[str(a.dtype).encode() for a in arrays]), None, None)
        assert status == 0
    return call


def test_kernels_called_from_several_threads_at_once_stay_right(monkeypatch):
    # MindSpore may run two Custom ops at once (one per runtime thread); they share the
    # library's helper threads.
    import threading
    monkeypatch.setenv("PACKRUN_NATIVE_THREADS", "2")
    transform = ctypes_kernel("WinoIn4")
    x = rand((4, 32, 8, 8), 9)
    expected = reference_in(x, 4).astype(np.float32)
    failures = []

    def worker():
        for _ in range(30):
            v = np.full(expected.shape, np.nan, np.float32)
            transform([x], [v])
            if not np.allclose(v, expected, rtol=1e-5, atol=1e-4):
                failures.append(v)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and not failures


def test_a_forked_child_runs_the_kernels_on_its_own_helpers(monkeypatch):
    # The helper threads do not survive a fork; a child that runs a kernel must neither hang
    # nor depend on them.
    import os
    import time
    monkeypatch.setenv("PACKRUN_NATIVE_THREADS", "2")
    transform = ctypes_kernel("WinoIn4")
    x = rand((4, 32, 8, 8), 10)
    v = np.empty(reference_in(x, 4).shape, np.float32)
    transform([x], [v])  # the parent's helpers exist now
    expected = v.copy()
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if the kernel ran and was right
        try:
            out = np.empty_like(expected)
            transform([x], [out])
            os._exit(0 if np.array_equal(out, expected) else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in the kernel")
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("map_shape", [(2, 2), (1, 2), (1, 1), (2, 1)])
def test_the_dense_weight_of_a_3x3_conv_on_a_tiny_map_and_its_adjoint(map_shape):
    dense = native_kernels.dense_conv_ops()
    assert dense is not None
    weight, x = rand((5, 3, 3, 3), 11), rand((2, 3, *map_shape), 12)
    expanded = dense.expand(ms.Tensor(weight), ms.Tensor(x)).asnumpy()
    h, w = map_shape
    assert expanded.shape == (5 * h * w, 3 * h * w)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((2, 5, h, w))
    for i in range(h):
        for j in range(w):
            expected[:, :, i, j] = np.einsum("ncab,ocab->no", padded[:, :, i:i + 3, j:j + 3],
                                             weight)
    y = (x.reshape(2, -1) @ expanded.T).reshape(expected.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)  # the conv, as one matmul

    def f(k, inputs):
        return dense.expand(k, inputs)

    dout = rand(expanded.shape, 13)
    dweight = ms.ops.GradOperation(sens_param=True)(f)(ms.Tensor(weight), ms.Tensor(x),
                                                       ms.Tensor(dout)).asnumpy()
    assert np.isclose(np.vdot(expanded.astype(np.float64), dout),
                      np.vdot(weight.astype(np.float64), dweight), rtol=1e-4)
