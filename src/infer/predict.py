"""`packrun predict (RUN_DIR | MODEL_FILE) IMAGES_OR_DIRS...`: classify image files.

The model comes from a run directory (its checkpoint, the job's network), an exported MindIR
(nn.GraphCell) or an exported ONNX file (onnxruntime, the optional extra packrun[onnx]); the
last two read the class names and evaluation transforms from FILE.json beside them (written by
`packrun export`). Every source decodes with the same eager MindSpore transforms the job
evaluates with, so the three give the same classes and probabilities.

One line per image on stdout (path, class, probability; top_k pairs), optionally a CSV and the
tutorial's prediction grid. An image that cannot be decoded is named on stderr, the others are
still predicted, and the exit status is 2 at the end. When every image lies in a folder named
after a class (an ImageFolder split), the accuracy this implies is printed too.
"""

from __future__ import annotations

import csv as csv_module
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from launcher.core.errors import EXIT_USER_ERROR, UserError
from launcher.core.rundir.atomic import write_atomic
from launcher.core.samples import IMAGE_EXTENSIONS, why_not_a_sample  # the data sets' rule
from src.infer.export import (
    ONNX_EXTRA,
    checkpoint_path,
    configure,
    load_network,
    open_run,
    record_path,
    run_classes,
    transforms_record,
)

BATCH = 32  # images per forward pass from a run directory (exported models take one)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability)
    error: str = ""
    image: np.ndarray | None = None  # normalised CHW, kept for the picture


class Preprocess:
    """The evaluation transforms from their record (src/export.transforms_record), eager."""

    def __init__(self, record: dict):
        import mindspore.dataset.vision as vision
        self.ops = [vision.Decode(), vision.Resize(record["resize_short_side"]),
                    vision.CenterCrop(record["center_crop"]),
                    vision.Normalize(mean=record["mean"], std=record["std"]), vision.HWC2CHW()]
        self.mean, self.std = record["mean"], record["std"]

    def __call__(self, path: Path) -> np.ndarray:
        data = np.fromfile(str(path), dtype=np.uint8)
        if data.size == 0:
            raise ValueError("empty file")
        for op in self.ops:
            data = op(data)
        return np.ascontiguousarray(data, dtype=np.float32)


class CheckpointModel:
    def __init__(self, run_dir: str, checkpoint: str, device: str):
        run_dir, spec = open_run(run_dir)
        ckpt = checkpoint_path(run_dir, checkpoint)
        configure(device)
        # the job's network as the run evaluated it (im2col convolutions on CPU)
        im2col = device == spec.device == "CPU" and spec.cpu_conv == "im2col"
        self.net, self.epoch, self.val_acc = load_network(spec, ckpt, cpu_conv=im2col)
        self.batch = BATCH
        self.classes = run_classes(run_dir, spec)
        self.transforms = transforms_record(spec.image_size)
        self.what = f"{ckpt} ({spec.arch})"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import mindspore as ms
        n = len(batch)
        if n < self.batch:  # one compiled shape: pad the last batch
            batch = np.concatenate([batch, np.zeros((self.batch - n,) + batch.shape[1:],
                                                    np.float32)])
        return self.net(ms.Tensor(batch)).asnumpy()[:n]


def _read_record(model_file: Path) -> dict:
    path = record_path(model_file)
    if not path.is_file():
        raise UserError(f"{path} not found beside {model_file.name}: it holds the class names and "
                        "transforms; export with `packrun export RUN_DIR`, which writes both")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: corrupt ({e}); export the model again") from None


class MindirModel:
    def __init__(self, path: Path, device: str):
        record = _read_record(path)
        configure(device)
        import mindspore as ms
        from mindspore import nn
        try:
            self.net = nn.GraphCell(ms.load(str(path)))
        except Exception as e:  # noqa: BLE001 -- MindSpore raises RuntimeError with C++ traces
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{path} cannot be loaded as MindIR ({first[:200]})") from None
        self.batch = record["input"]["shape"][0]
        self.classes, self.transforms = record["classes"], record["transforms"]
        self.epoch, self.val_acc = record.get("epoch"), record.get("val_acc")
        self.what = f"{path} (MindIR)"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import mindspore as ms
        return self.net(ms.Tensor(batch)).asnumpy()


class OnnxModel:
    def __init__(self, path: Path):
        record = _read_record(path)
        try:
            import onnxruntime
        except ImportError:
            raise UserError(f"predicting with an ONNX model needs onnxruntime: {ONNX_EXTRA}; "
                            "or predict from the run directory or a MindIR export") from None
        try:
            self.session = onnxruntime.InferenceSession(str(path),
                                                        providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 -- onnxruntime's errors are its own classes
            raise UserError(f"{path} cannot be loaded by onnxruntime ({str(e)[:200]})") from None
        self.input = self.session.get_inputs()[0].name
        self.batch = record["input"]["shape"][0]
        self.classes, self.transforms = record["classes"], record["transforms"]
        self.epoch, self.val_acc = record.get("epoch"), record.get("val_acc")
        self.what = f"{path} (ONNX, onnxruntime)"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: batch})[0]


def open_model(source: str, checkpoint: str, device: str):
    path = Path(source).expanduser()
    if path.is_dir():
        return CheckpointModel(str(path), checkpoint, device)
    if not path.is_file():
        raise UserError(f"{source} does not exist; give a run directory, a .mindir or an .onnx "
                        "file")
    suffix = path.suffix.lower()
    if suffix == ".mindir":
        return MindirModel(path.resolve(), device)
    if suffix == ".onnx":
        return OnnxModel(path.resolve())
    raise UserError(f"{source}: not a run directory, .mindir or .onnx file")


def image_paths(args) -> tuple[list[Path], list[Prediction]]:
    """Files as given, directories searched recursively for images (sorted); paths that do not
    exist come back as failed predictions."""
    files, missing = [], []
    for arg in args:
        p = Path(str(arg)).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*")
                           if not any(part.startswith(".") for part in f.relative_to(p).parts)
                           and why_not_a_sample(f) is None)
            if not found:
                missing.append(Prediction(str(p), error="a directory without images "
                                          f"({', '.join(IMAGE_EXTENSIONS[:4])}, ...)"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            missing.append(Prediction(str(p), error="no such file or directory"))
    return files, missing


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z.astype(np.float64))
    return e / e.sum(axis=1, keepdims=True)


def predict(model, files: list[Path], top_k: int, keep_images: int = 0) -> list[Prediction]:
    """Predictions for `files` in order; undecodable files carry their error."""
    prep = Preprocess(model.transforms)
    out = [Prediction(str(f)) for f in files]
    ready: list[int] = []
    arrays: list[np.ndarray] = []
    for i, f in enumerate(files):
        try:
            arrays.append(prep(f))
            ready.append(i)
        except Exception as e:  # noqa: BLE001 -- any decode failure names the image
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            out[i].error = f"cannot be decoded ({first[:160]})"
    for start in range(0, len(ready), model.batch):
        idx = ready[start:start + model.batch]
        batch = np.stack(arrays[start:start + model.batch])
        probs = softmax(model.logits(batch))
        for row, i in enumerate(idx):
            order = np.argsort(-probs[row], kind="stable")[:top_k]
            out[i].top = [(model.classes[int(c)], float(probs[row, c])) for c in order]
            if i < keep_images:
                out[i].image = batch[row]
    return out


def implied_accuracy(preds: list[Prediction], classes: list[str]) -> tuple[int, int] | None:
    """(correct, total) when every predicted image's folder is a class name, else None."""
    done = [p for p in preds if p.top]
    if not done or any(Path(p.path).parent.name not in classes for p in done):
        return None
    return sum(p.top[0][0] == Path(p.path).parent.name for p in done), len(done)


def csv_text(preds: list[Prediction], top_k: int) -> str:
    buf = io.StringIO()
    w = csv_module.writer(buf)
    header = ["path"]
    for k in range(1, top_k + 1):
        header += [f"class_{k}", f"probability_{k}"]
    w.writerow(header + ["error"])
    for p in preds:
        row = [p.path]
        for k in range(top_k):
            row += [p.top[k][0], repr(p.top[k][1])] if k < len(p.top) else ["", ""]
        w.writerow(row + [p.error])
    return buf.getvalue()


def write_picture(preds: list[Prediction], classes: list[str], transforms: dict, out: Path) -> Path:
    """The tutorial's prediction grid: `pre:<class>` over each image; blue when right, red when
    wrong where the folder names the class, black where it does not."""
    from src.pictures import visualize
    shown = [p for p in preds if p.image is not None]
    if not shown:
        raise UserError("--picture: no image could be predicted")
    images = visualize.display_images(np.stack([p.image for p in shown]), transforms["mean"],
                                      transforms["std"])
    titles, colors = [], []
    for p in shown:
        cls, prob = p.top[0]
        truth = Path(p.path).parent.name
        titles.append(f"pre:{cls} {prob:.2f}")
        colors.append(("blue" if cls == truth else "red") if truth in classes else "black")
    return visualize.save_png(visualize.image_grid(images, titles, colors), out)


def _flag_int(name: str, value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--{name}={value!r}: give a whole number") from None
    if n < 1:
        raise UserError(f"--{name}={n}: give 1 or more")
    return n


def predict_command(source, images, top_k=1, csv=None, picture=None, checkpoint="best",
                    device="CPU", out=sys.stdout, err=sys.stderr) -> int:
    top_k = _flag_int("top_k", top_k)
    if not images:
        raise UserError("give images or directories to predict: packrun predict RUN_DIR "
                        "IMAGE_OR_DIR ...")
    for flag, value in (("csv", csv), ("picture", picture)):
        if value is not None and not Path(str(value)).expanduser().resolve().parent.is_dir():
            raise UserError(f"--{flag}={value}: its directory does not exist")
    files, missing = image_paths(images)
    model = open_model(str(source), str(checkpoint), str(device))
    top_k = min(top_k, len(model.classes))
    from src.pictures.visualize import MAX_PANELS
    preds = predict(model, files, top_k, keep_images=MAX_PANELS if picture else 0) + missing
    for p in preds:
        if p.error:
            print(f"packrun: error: {p.path}: {p.error}", file=err, flush=True)
        else:
            print(p.path + "".join(f"  {c}  {prob:.4f}" for c, prob in p.top), file=out)
    failed = sum(1 for p in preds if p.error)
    summary = f"packrun predict: {len(preds) - failed} of {len(preds)} images predicted with " \
              f"{model.what}"
    acc = implied_accuracy(preds, model.classes)
    if acc:
        summary += f"; accuracy {acc[0] / acc[1]} ({acc[0]}/{acc[1]}, class = folder name)"
    print(summary, file=out, flush=True)
    if csv:
        path = Path(str(csv)).expanduser().resolve()
        write_atomic(path, csv_text(preds, top_k))
        print(f"packrun predict: CSV {path}", file=out)
    if picture:
        path = write_picture(preds, model.classes, model.transforms,
                             Path(str(picture)).expanduser().resolve())
        print(f"packrun predict: picture {path}", file=out)
    if failed:
        print(f"packrun: error: {failed} image(s) could not be predicted (named above)",
              file=err, flush=True)
        return EXIT_USER_ERROR
    return 0
