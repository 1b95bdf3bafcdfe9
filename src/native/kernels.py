"""The CPU path's native kernels (src/native/) as MindSpore Custom ops.

The transforms around Winograd's batched matmul are pure data movement plus a few adds, and
MindSpore's own kernels for them (Im2Col, Transpose, a Kronecker MatMul; Col2Im and the rest
in the backward) ran at 1-3 GB/s; winograd.cc does each in one pass. MindSpore's CPU
BatchNorm and the ReLU after it take five passes over an activation each way; batchnorm.cc
two; pool.cc is the ResNet18/34 stem's max-pool with its padding skipped, not stored;
im2col.cc writes a convolution's columns with the padding read as zeros, in the layout the
matmul takes (per image, or one row per output position), and for a 3x3 convolution on a
2x2 map the expanded weight of one dense matmul. All are ``mindspore.ops.Custom`` operators
(``func_type="aot"``) in one library.

It is compiled with g++ on first use, for this machine's CPU (``-march=native``), into
``src/native/build/`` (or, when the checkout is read-only, ``$TMPDIR/packrun-native-<uid>``).
The library's name carries a digest of the source, the compiler's version and this CPU's
model and flags, so a shared checkout serves nodes of different CPUs, an edit rebuilds, and
ranks starting at once do not clash (each compiles to its own temporary name, then renames).
``install.sh`` builds it ahead (``python -m src.native.kernels``).

Without g++, or when the build fails, :func:`winograd_ops` returns None, says why once on
stderr, and src/model/resnet.py keeps the pure-MindSpore formulation: same results, slower.
Set ``PACKRUN_NATIVE=0`` to force that path (the tests compare both). The kernels split
their work over the cores this process may run on (its affinity: a taskset, a cgroup or
Slurm's binding); ``PACKRUN_NATIVE_THREADS=k`` sets the count instead.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from launcher.core import native_digest
from launcher.core.rundir.names import NATIVE_ENV

NATIVE_DIR = Path(__file__).resolve().parent
DISABLE_ENV = NATIVE_ENV
COMPILER = native_digest.COMPILER
FLAGS = native_digest.FLAGS


def _cpu_identity() -> str:
    """This CPU's model and instruction-set flags (what -march=native compiles for)."""
    return native_digest.cpu_identity()


def _sources() -> list[Path]:
    """The C++ files compiled into the one library (headers count for its digest)."""
    return native_digest.sources(NATIVE_DIR)


def _library_name(compiler: str) -> str:
    """The library's name: the digest of its sources, the compiler's version (asked once per
    compiler, launcher/core/native_digest.py), this CPU and the flags; run directories record
    the same digest in env.json."""
    files = [*_sources(), *sorted(NATIVE_DIR.glob("*.h"))]
    digest = native_digest.digest(files, native_digest.compiler_version(compiler),
                                  _cpu_identity(), FLAGS)
    return f"packrun-native-{digest[:16]}.so"


def _build_dirs() -> list[Path]:
    return [NATIVE_DIR / "build",
            Path(tempfile.gettempdir()) / f"packrun-native-{os.getuid()}"]


def build() -> Path:
    """The compiled library's path, compiling it first if needed. Raises RuntimeError."""
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise RuntimeError(f"no {COMPILER} on PATH (Debian: apt-get install g++)")
    name = _library_name(compiler)
    for directory in _build_dirs():
        if (directory / name).is_file():
            return directory / name
    errors = []
    for directory in _build_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f".{name}.{os.getpid()}.tmp"
            result = subprocess.run([compiler, *FLAGS, "-o", str(tmp),
                                     *(str(f) for f in _sources())],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tmp.unlink(missing_ok=True)
                lines = (result.stderr.strip() or "failed").splitlines()
                raise RuntimeError(f"{COMPILER} failed on {NATIVE_DIR.name}/: {lines[0]}")
            os.replace(tmp, directory / name)
            return directory / name
        except OSError as e:
            errors.append(f"{directory}: {e.strerror or e}")
    raise RuntimeError("cannot write the library: " + "; ".join(errors))


class WinogradOps:
    """The eight Custom ops: input and output transforms for m = 2 and 4 (their adjoints are
    their bprops), and the adjoints themselves."""

    def __init__(self, library: Path):
        from mindspore import ops  # MindSpore only where the ops are made

        def custom(func, out_shape, bprop=None):
            return ops.Custom(f"{library}:{func}", out_shape=out_shape, out_dtype=_first,
                              func_type="aot", bprop=bprop)

        self.transform_in, self.transform_out, self.adjoint_in, self.adjoint_out = {}, {}, {}, {}
        for m in (2, 4):
            self.adjoint_in[m] = custom(f"WinoInT{m}", _second)  # (dv, x for its shape)
            self.adjoint_out[m] = custom(f"WinoOutT{m}", _out_t_shape(m))
            self.transform_in[m] = custom(f"WinoIn{m}", _in_shape(m),
                                          _in_bprop(self.adjoint_in[m]))
            self.transform_out[m] = custom(f"WinoOut{m}", _out_shape(m),
                                           _out_bprop(self.adjoint_out[m]))


# Shape and dtype inference and bprops, made by factories: MindSpore counts a function's
# parameters, so they take exactly the op's inputs (no default-argument closures).
def _first(dtype, *_):
    return dtype


def _second(_, shape):
    return list(shape)


def _in_shape(m):
    def infer(x):
        n, c, h, w = x
        return [(m + 2) * (m + 2), c, n * -(-h // m) * -(-w // m)]
    return infer


def _out_shape(m):
    def infer(t):
        _, o, n, th, tw = t
        return [n, o, th * m, tw * m]
    return infer


def _out_t_shape(m):
    def infer(dy):
        n, o, h, w = dy
        return [(m + 2) * (m + 2), o, n, h // m, w // m]
    return infer


def _in_bprop(adjoint):
    def bprop(x, out, dout):
        return (adjoint(dout, x),)
    return bprop


def _out_bprop(adjoint):
    def bprop(t, out, dout):
        return (adjoint(dout),)
    return bprop


class BatchNormOps:
    """Training-mode BatchNorm, plain and fused with the ReLU after it (``relu`` 0 / 1):
    ``forward[relu](x, gamma, beta, eps) -> (y, batch mean, biased batch variance)``, its
    bprop the native backward."""

    def __init__(self, library: Path):
        from mindspore import ops  # MindSpore only where the ops are made

        self.forward = {}
        for relu in (0, 1):
            backward = ops.Custom(f"{library}:BnBwd{relu}", out_shape=_bn_grad_shapes,
                                  out_dtype=_bn_grad_dtypes, func_type="aot")
            self.forward[relu] = ops.Custom(f"{library}:BnFwd{relu}", out_shape=_bn_shapes,
                                            out_dtype=_bn_dtypes, func_type="aot",
                                            bprop=_bn_bprop(backward))


def _bn_shapes(x, gamma, beta, eps):
    return list(x), list(gamma), list(gamma)


def _bn_dtypes(x, gamma, beta, eps):
    return x, x, x


def _bn_grad_shapes(dy, x, gamma, beta, mean, var, eps):
    return list(x), list(gamma), list(gamma)


def _bn_grad_dtypes(dy, x, gamma, beta, mean, var, eps):
    return x, x, x


def _bn_bprop(backward):
    from mindspore import ops  # MindSpore only where the ops are made

    def bprop(x, gamma, beta, eps, out, dout):
        dx, dgamma, dbeta = backward(dout[0], x, gamma, beta, out[1], out[2], eps)
        return dx, dgamma, dbeta, ops.zeros_like(eps)
    return bprop


class Im2colOps:
    """im2col.cc for one convolution's geometry (kh, kw, stride_h, stride_w, pad_top,
    pad_bottom, pad_left, pad_right): ``cols(x, geometry)`` -> (N, K, L) and
    ``rows(x, geometry)`` -> (N * L, K), their adjoints their bprops; ``geometry`` is the
    int64 Tensor to pass."""

    def __init__(self, library: Path, geometry: tuple[int, ...]):
        import numpy as np
        from mindspore import Tensor, ops  # MindSpore only where the ops are made

        self.geometry = Tensor(np.array(geometry, np.int64))
        cols_t = ops.Custom(f"{library}:Im2ColColsT", out_shape=_third, out_dtype=_first,
                            func_type="aot")  # (dcols, geometry, x for its shape)
        rows_t = ops.Custom(f"{library}:Im2ColRowsT", out_shape=_third, out_dtype=_first,
                            func_type="aot")
        self.cols = ops.Custom(f"{library}:Im2ColCols", out_shape=_cols_shape(geometry),
                               out_dtype=_first, func_type="aot", bprop=_im2col_bprop(cols_t))
        self.rows = ops.Custom(f"{library}:Im2ColRows", out_shape=_rows_shape(geometry),
                               out_dtype=_first, func_type="aot", bprop=_im2col_bprop(rows_t))
        # The geometry as an attribute too: PyNative caches an op's output shape by its name,
        # function, attributes and input shapes, so without it two geometries on inputs of the
        # same shape (layer2's 3x3 and 1x1 stride-2 convs) shared the first one's shape.
        for op in (cols_t, rows_t, self.cols, self.rows):
            op.add_prim_attr("packrun_geometry", geometry)


def _third(_, __, shape):
    return list(shape)


def _conv_out(geometry, h, w):
    kh, kw, sh, sw, top, bottom, left, right = geometry
    return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1


def _cols_shape(geometry):
    def infer(x, g):
        n, c, h, w = x
        oh, ow = _conv_out(geometry, h, w)
        return [n, c * geometry[0] * geometry[1], oh * ow]
    return infer


def _rows_shape(geometry):
    def infer(x, g):
        n, c, h, w = x
        oh, ow = _conv_out(geometry, h, w)
        return [n * oh * ow, c * geometry[0] * geometry[1]]
    return infer


def _im2col_bprop(adjoint):
    from mindspore import ops  # MindSpore only where the ops are made

    def bprop(x, g, out, dout):
        return adjoint(dout, g, x), ops.zeros_like(g)
    return bprop


class DenseConvOps:
    """im2col.cc's dense form of a 3x3 stride-1 convolution padded by 1 on a map of a few
    positions: ``expand(weight, x)`` -> the (O*H*W, C*H*W) matrix that multiplies the image as
    it lies, (N, C*H*W); its adjoint is its bprop."""

    def __init__(self, library: Path):
        from mindspore import ops  # MindSpore only where the ops are made

        adjoint = ops.Custom(f"{library}:Im2ColExpandT", out_shape=_weight_shape,
                             out_dtype=_first, func_type="aot")  # (dWd, weight, x: shapes)
        self.expand = ops.Custom(f"{library}:Im2ColExpand", out_shape=_expand_shape,
                                 out_dtype=_first, func_type="aot", bprop=_expand_bprop(adjoint))


def _weight_shape(_, weight, __):
    return list(weight)


def _expand_shape(weight, x):
    positions = x[2] * x[3]
    return [weight[0] * positions, weight[1] * positions]


def _expand_bprop(adjoint):
    from mindspore import ops  # MindSpore only where the ops are made

    def bprop(weight, x, out, dout):
        return adjoint(dout, weight, x), ops.zeros_like(x)  # x: for its shape only
    return bprop


class PoolOps:
    """The ResNet18/34 stem's 3x3 stride-2 max-pool with padding 1 (pool.cc): ``forward(x)``,
    its bprop the native backward."""

    def __init__(self, library: Path):
        from mindspore import ops  # MindSpore only where the ops are made

        backward = ops.Custom(f"{library}:PoolBwd", out_shape=_second, out_dtype=_first,
                              func_type="aot")  # (dy, x for its shape and the maxima)
        self.forward = ops.Custom(f"{library}:PoolFwd", out_shape=_pool_shape, out_dtype=_first,
                                  func_type="aot", bprop=_pool_bprop(backward))


def _pool_shape(x):
    n, c, h, w = x
    return [n, c, (h - 1) // 2 + 1, (w - 1) // 2 + 1]


def _pool_bprop(backward):
    def bprop(x, out, dout):
        return (backward(dout, x),)
    return bprop


@functools.lru_cache(maxsize=1)
def library() -> Path | None:
    """The built library, or None (said once on stderr) when it cannot be built here."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None
    try:
        return build()
    except RuntimeError as e:
        print(f"packrun: warning: native CPU kernels unavailable ({e}); "
              "the CPU path uses the slower pure-MindSpore formulation", file=sys.stderr,
              flush=True)
        return None


@functools.lru_cache(maxsize=1)
def winograd_ops() -> WinogradOps | None:
    """The Winograd transforms, or None without the library."""
    lib = library()
    return WinogradOps(lib) if lib else None


@functools.lru_cache(maxsize=None)
def im2col_ops(geometry: tuple[int, ...]) -> Im2colOps | None:
    """im2col for one geometry (see Im2colOps), or None without the library."""
    lib = library()
    return Im2colOps(lib, geometry) if lib else None


@functools.lru_cache(maxsize=1)
def dense_conv_ops() -> DenseConvOps | None:
    """The dense form of 3x3 convolutions on tiny maps, or None without the library."""
    lib = library()
    return DenseConvOps(lib) if lib else None


@functools.lru_cache(maxsize=1)
def pool_ops() -> PoolOps | None:
    """The stem's max-pool, or None without the library."""
    lib = library()
    return PoolOps(lib) if lib else None


@functools.lru_cache(maxsize=1)
def batchnorm_ops() -> BatchNormOps | None:
    """The BatchNorm kernels, or None without the library."""
    lib = library()
    return BatchNormOps(lib) if lib else None


def main() -> int:
    """`python -m src.native.kernels`: build the library now (install.sh), print its path."""
    try:
        print(build())
    except RuntimeError as e:
        print(f"packrun: warning: native CPU kernels not built: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
