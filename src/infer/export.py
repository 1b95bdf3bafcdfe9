"""`packrun export RUN_DIR`: a run's checkpoint as a MindIR or ONNX inference model, with what a
user needs to feed it recorded beside it (FILE.json: class names in output order, the input
shape, the evaluation transforms).

The exported graph is the job's network (arch, classes, image size) in inference mode with the
portable convolution (nn.Conv2d, not the CPU im2col path; same parameters). For ONNX, MindSpore
2.10's converter refuses two Model Zoo pieces, so the ONNX graph (only) replaces them by
equivalent operators: the stem's max-pool (nn.MaxPool2d becomes MaxPool3DWithArgmax, "not yet
supported") by explicit zero padding + a 'valid' MaxPool (the same, because its input is a ReLU
output, >= 0), and each inference BatchNorm (its converter fails on 2.10's BatchNorm inputs) by
its affine form x * scale + shift computed from the checkpoint's statistics. The checkpoint is
unchanged. Every export is checked before it is kept: the file is loaded back (nn.GraphCell,
onnxruntime) and must give the checkpoint's logits within 1e-4.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from launcher.core.errors import UserError
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.names import BEST_CKPT, CLASSES_JSON, JOB_JSON, LAST_CKPT
from launcher.core.spec import JobSpec

FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx"}
RECORD_FORMAT = 1
TOLERANCE = 1e-4
ONNX_EXTRA = "pip install 'packrun[onnx]' (onnx and onnxruntime)"


# ---------------------------------------------------------------------------------------------
# What a model needs beside it
# ---------------------------------------------------------------------------------------------

def record_path(model_file: str | Path) -> Path:
    """FILE.json beside FILE."""
    return Path(f"{model_file}.json")


def transforms_record(image_size: int) -> dict:
    """The evaluation transforms (src/dataset.eval_transforms) as data."""
    from src.data import dataset
    return {"decode": "RGB", "resize_short_side": dataset.eval_resize(image_size),
            "center_crop": image_size, "mean": dataset.MEAN, "std": dataset.STD,
            "pixel_range": "0..255 (normalised as (pixel - mean) / std)", "layout": "NCHW"}


def run_classes(run_dir: Path, spec: JobSpec) -> list[str]:
    """The class names in label order, as the run recorded them (classes.json), else from its
    train_dir."""
    path = run_dir / CLASSES_JSON
    if path.is_file():
        return json.loads(path.read_text())
    if Path(spec.train_dir).is_dir():
        from src.data.dataset import class_names
        return class_names(spec.train_dir)
    raise UserError(f"{run_dir} has no {CLASSES_JSON} and its train_dir {spec.train_dir} is gone: "
                    "the class names are unknown; run on a machine with the data")


def open_run(run_dir: str | Path) -> tuple[Path, JobSpec]:
    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / JOB_JSON).is_file():
        raise UserError(f"{run_dir} is not a run directory (no {JOB_JSON}); give the directory "
                        "`packrun debug` / `run` / `submit` printed")
    return run_dir, spec_from_json(run_dir)


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """--checkpoint=best|last|PATH -> the file, which must exist."""
    names = {"best": BEST_CKPT, "last": LAST_CKPT}
    path = run_dir / names[checkpoint] if checkpoint in names else \
        Path(checkpoint).expanduser().resolve()
    if not path.is_file():
        if checkpoint in names:
            why = ("no epoch has been evaluated yet (or the run failed before)" if checkpoint ==
                   "best" else "no epoch has finished yet")
            raise UserError(f"{run_dir} has no {path.name}: {why}; wait for the run, or give "
                            "--checkpoint=last or --checkpoint=PATH")
        raise UserError(f"--checkpoint={checkpoint}: {path} is not a file; give best, last or a "
                        ".ckpt file")
    return path


def configure(device: str) -> None:
    import mindspore as ms
    if device not in ("CPU", "GPU", "Ascend"):
        raise UserError(f"--device={device!r}: give CPU, GPU or Ascend")
    ms.set_context(mode=ms.GRAPH_MODE, device_target=device)


def load_network(spec: JobSpec, ckpt: Path, cpu_conv: bool):
    """The job's network with `ckpt`'s weights, in inference mode; (network, epoch, val_acc)."""
    import mindspore as ms

    from src.model.resnet import build_resnet
    from src.training.checkpoint import read_checkpoint
    net = build_resnet(spec.arch, spec.num_classes, cpu_conv=cpu_conv)
    params = read_checkpoint(ckpt)
    extra = {k: params.pop(k) for k in ("epoch", "val_acc") if k in params}
    missing = [p.name for p in net.get_parameters() if p.name not in params]
    wrong = [p.name for p in net.get_parameters()
             if p.name in params and tuple(params[p.name].shape) != tuple(p.shape)]
    if missing or wrong:
        raise UserError(f"checkpoint {ckpt} does not fit the run's network ({spec.arch}, "
                        f"{spec.num_classes} classes): "
                        + (f"{len(missing)} parameter(s) missing, first {missing[0]}" if missing
                           else f"{len(wrong)} shape mismatch(es), first {wrong[0]}"))
    ms.load_param_into_net(net, params)
    net.set_train(False)
    epoch = int(extra["epoch"].asnumpy()) if "epoch" in extra else None
    val_acc = float(extra["val_acc"].asnumpy()) if "val_acc" in extra else None
    return net, epoch, val_acc


# ---------------------------------------------------------------------------------------------
# The ONNX graph
# ---------------------------------------------------------------------------------------------

def onnx_graph(net, spec: JobSpec):
    """`net` (inference mode) rebuilt from operators MindSpore 2.10 converts to ONNX: affine
    BatchNorm, padded 'valid' max-pool. Changes `net` in place and returns it."""
    from mindspore import nn, ops

    from src.model.resnet import same_pads

    class AffineBatchNorm(nn.Cell):
        """Inference BatchNorm: x * gamma / sqrt(var + eps) + (beta - mean * that)."""

        def __init__(self, bn):
            super().__init__()
            import mindspore as ms
            gamma, beta = bn.gamma.asnumpy(), bn.beta.asnumpy()
            mean, var = bn.moving_mean.asnumpy(), bn.moving_variance.asnumpy()
            scale = gamma / np.sqrt(var + bn.eps)
            self.scale = ms.Tensor(scale.reshape(1, -1, 1, 1).astype(np.float32))
            self.shift = ms.Tensor((beta - mean * scale).reshape(1, -1, 1, 1).astype(np.float32))

        def construct(self, x):
            return x * self.scale + self.shift

    class PaddedMaxPool(nn.Cell):
        """3x3/2 max-pool of a non-negative input: zero padding, then 'valid'."""

        def __init__(self, pads):
            super().__init__()
            self.pad = ops.Pad(((0, 0), (0, 0), pads, pads))
            self.pool = ops.MaxPool(kernel_size=3, strides=2, pad_mode="VALID")

        def construct(self, x):
            return self.pool(self.pad(x))

    def swap(cell):
        for name, child in list(cell.name_cells().items()):
            if isinstance(child, nn.BatchNorm2d):
                replacement = AffineBatchNorm(child)
                if isinstance(cell, nn.SequentialCell):
                    cell[int(name)] = replacement
                else:
                    setattr(cell, name, replacement)
            else:
                swap(child)

    swap(net)
    res_base = spec.arch in ("resnet18", "resnet34")
    stem_side = -(-spec.image_size // 2)
    net.maxpool = PaddedMaxPool((1, 1) if res_base else same_pads(stem_side, 3, 2))
    net.set_train(False)
    return net


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def require_onnx():
    """(onnx, onnxruntime), or a UserError saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise UserError(f"ONNX needs the optional packages onnx and onnxruntime ({e}); "
                        f"{ONNX_EXTRA}, or use --format=MINDIR") from None
    return onnx, onnxruntime


def output_file(out: str | None, run_dir: Path, ckpt: Path, fmt: str) -> Path:
    suffix = FORMATS[fmt]
    path = Path(out).expanduser().resolve() if out else run_dir / f"{ckpt.stem}{suffix}"
    if path.suffix.lower() != suffix:
        path = path.with_name(path.name + suffix)
    if path.is_dir():
        raise UserError(f"--out={out}: {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise UserError(f"--out={out}: the directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"--out={out}: cannot write in {path.parent}")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_model(run_dir, checkpoint: str = "best", fmt: str = "MINDIR", out: str | None = None,
                 device: str = "CPU", log=print) -> Path:
    """Export; returns the model file (its record is FILE.json)."""
    fmt = str(fmt).upper()
    if fmt not in FORMATS:
        raise UserError(f"--format={fmt}: give MINDIR or ONNX")
    return export_models(run_dir, checkpoint, [fmt], out, device, log)[0]


def export_models(run_dir, checkpoint: str, formats: list[str], out: str | None = None,
                  device: str = "CPU", log=print) -> list[Path]:
    """Export `formats` (checked names) from one load of the network and one reference
    forward pass (each load and each compiled pass is seconds of a ResNet); the model files in
    the order of `formats`. The ONNX graph is made last: it changes the network in place."""
    run_dir, spec = open_run(run_dir)
    ckpt = checkpoint_path(run_dir, str(checkpoint))
    onnx_mods = require_onnx() if "ONNX" in formats else None
    classes = run_classes(run_dir, spec)
    paths = {fmt: output_file(out, run_dir, ckpt, fmt) for fmt in formats}
    configure(device)

    import mindspore as ms
    net, epoch, val_acc = load_network(spec, ckpt, cpu_conv=False)
    probe = np.random.default_rng(0).standard_normal(
        (1, 3, spec.image_size, spec.image_size)).astype(np.float32)
    # the reference logits op by op: compiling a graph for one forward pass cost more
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        expected = net(ms.Tensor(probe)).asnumpy()
    finally:
        ms.set_context(mode=previous)
    for fmt in sorted(formats, key=lambda f: f == "ONNX"):
        path = paths[fmt]
        graph = onnx_graph(net, spec) if fmt == "ONNX" else net
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}")
        written = Path(f"{tmp}{FORMATS[fmt]}")  # ms.export appends the suffix
        try:
            ms.export(graph, ms.Tensor(probe), file_name=str(tmp), file_format=fmt)
            got, input_name = (_run_onnx(written, probe, onnx_mods) if fmt == "ONNX" else
                               (_run_mindir(written, probe), None))
            diff = float(np.abs(got - expected).max())
            if not diff <= TOLERANCE * max(1.0, float(np.abs(expected).max())):
                raise RuntimeError(f"the exported {fmt} model gives logits {diff:.3g} away from "
                                   "the checkpoint's: not kept (a packrun bug, please report)")
            os.replace(written, path)
        finally:
            written.unlink(missing_ok=True)
        record = {
            "format": RECORD_FORMAT, "model_format": fmt, "model_file": path.name,
            "model_sha256": _sha256(path),
            "arch": spec.arch, "num_classes": spec.num_classes, "classes": classes,
            "image_size": spec.image_size,
            "input": {"name": input_name, "shape": [1, 3, spec.image_size, spec.image_size],
                      "dtype": "float32"},
            "output": "logits (softmax gives the class probabilities)",
            "transforms": transforms_record(spec.image_size),
            "checkpoint": str(ckpt), "epoch": epoch, "val_acc": val_acc,
            "run_dir": str(run_dir), "job": spec.name, "freeze": spec.freeze,
        }
        write_atomic(record_path(path), json.dumps(record, indent=2) + "\n")
        what = f"epoch {epoch}, val acc {val_acc:.4f}" if epoch is not None else \
            "no epoch recorded"
        log(f"packrun: exported {ckpt.name} ({what}) as {fmt}: {path}")
        log(f"packrun: classes and evaluation transforms: {record_path(path)}")
        log(f"packrun: checked: loaded back, logits within {diff:.1e} of the checkpoint's")
    return [paths[fmt] for fmt in formats]


def _run_mindir(path: Path, x: np.ndarray) -> np.ndarray:
    import mindspore as ms
    from mindspore import nn
    return nn.GraphCell(ms.load(str(path)))(ms.Tensor(x)).asnumpy()


def _run_onnx(path: Path, x: np.ndarray, mods) -> tuple[np.ndarray, str]:
    onnx, onnxruntime = mods
    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0], name


def export_formats(fmt) -> list[str]:
    """`--format`: one format, or several separated by commas (the flag parser may hand over
    a tuple): MINDIR,ONNX exports both in one process (one start, one `import mindspore`)."""
    items = fmt if isinstance(fmt, (list, tuple)) else str(fmt).split(",")
    formats = [str(f).strip().upper() for f in items if str(f).strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UserError(f"--format={','.join(map(str, items))}: give MINDIR or ONNX (or both: "
                        "MINDIR,ONNX)")
    return list(dict.fromkeys(formats))


def export_command(run_dir, checkpoint="best", fmt="MINDIR", out=None, device="CPU") -> str:
    formats = export_formats(fmt)
    if out is not None and len(formats) > 1:
        raise UserError(f"--out={out} names one file: give one --format with it, or leave --out "
                        "out (RUN_DIR/best.mindir, best.onnx)")
    return "\n".join(map(str, export_models(run_dir, checkpoint, formats, out, device)))
