"""`packrun report RUN_DIR [RUN_DIR ...]`: one self-contained report.html per run or comparison.

Everything comes from the run directories (job.json, metrics.jsonl, logs/worker_<rank>.log,
the PNGs the worker left): a report can be written while a run is going, after it failed, or on
another machine. Pictures are embedded as data URIs, so the page opens offline, by e-mail, from
a cluster's scratch space. No MindSpore import (login nodes); matplotlib only for the overlaid
curves of several runs.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jinja2
from markupsafe import Markup

from launcher.core.errors import UserError
from launcher.core.logtail import console_text
from launcher.core.paths import TEMPLATES
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.metrics import best_row, read_metrics
from launcher.core.rundir.names import (
    EXIT_REQUEUE,
    JOB_JSON,
    LOGS,
    REPORT_HTML,
    RUN_PICTURES,
    read_exit_status,
)
from launcher.core.spec import JobSpec

TEMPLATE = "report.html.j2"
LOG_TAIL_LINES = 30
# The rate in a progress line (src/training/callbacks.py ProgressLine): "... 812.3 img/s ..."
PROGRESS_RATE = re.compile(r"step \d+/\d+\s+loss \S+\s+([\d.]+) img/s")
# Each rank's closing digest (src/train.py): "rank 1: final weights sha256 a29a5963a4cb2ae1, ..."
WEIGHTS_DIGEST = re.compile(r"^rank \d+: final weights sha256 ([0-9a-f]+)", re.M)


@dataclass
class RankLog:
    """One worker's log as the report shows it."""
    rank: int
    name: str
    size_kb: float
    images_per_s: float | None   # from the last progress line, when the rank printed any
    finished: bool               # printed the tutorial's "End training" line (main rank)
    tail: str                    # last lines, with `\r` progress updates collapsed
    exit_code: int | None = None  # from logs/worker_<rank>.exit, which a worker leaves as it ends
    digest: str | None = None     # its final weights' sha256 prefix

    @property
    def state(self) -> str:
        """What happened to the rank, from its exit file (not from what its log printed: only
        the main rank prints the tutorial's closing line)."""
        if self.exit_code == 0:
            return "finished (exit 0)"
        if self.exit_code == EXIT_REQUEUE:
            return f"stopped on request (exit {EXIT_REQUEUE}): resumable from last.ckpt"
        if self.exit_code is not None:
            return f"failed (exit {self.exit_code})"
        return "running, or killed (no exit file yet)"


@dataclass
class Run:
    """One run directory, read."""
    label: str
    path: Path
    spec: JobSpec
    rows: list[dict]
    pictures: list[tuple[str, str]]                       # (file name, data URI)
    missing_pictures: list[str]
    ranks: list[RankLog]

    @property
    def best(self) -> dict | None:
        return best_row(self.rows)

    @property
    def final(self) -> dict | None:
        return final_row(self.rows)

    @property
    def timings(self) -> dict:
        return timings(self.rows)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def timings(rows: Sequence[dict]) -> dict:
    """Totals, and steady-state means that leave out epoch 1 (graph compilation and warm-up
    inflate it) whenever there is more than one epoch."""
    if not rows:
        return {}
    steady = rows[1:] or rows

    def mean(k: str) -> float:
        return sum(r[k] for r in steady) / len(steady)

    return {
        "epochs": len(rows),
        "train_s": sum(r["epoch_time_s"] for r in rows),
        "eval_s": sum(r["eval_time_s"] for r in rows),
        "first_epoch_s": rows[0]["epoch_time_s"],
        "epoch_s": mean("epoch_time_s"),
        "step_ms": mean("step_time_ms"),
        "images_per_s": mean("images_per_s"),
        "steady_from": steady[0]["epoch"],
    }


def read_rank_logs(run_dir: Path) -> list[RankLog]:
    ranks = []
    for path in (run_dir / LOGS).glob("worker_*.log"):
        suffix = path.stem.removeprefix("worker_")
        if not suffix.isdigit():
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")  # keep "\r" (progress)
        rates = PROGRESS_RATE.findall(raw)
        digests = WEIGHTS_DIGEST.findall(raw)
        ranks.append(RankLog(
            rank=int(suffix), name=f"{LOGS}/{path.name}", size_kb=path.stat().st_size / 1024,
            images_per_s=float(rates[-1]) if rates else None,
            finished="End training, the best" in raw,
            tail="\n".join(console_text(raw).splitlines()[-LOG_TAIL_LINES:]),
            exit_code=read_exit_status(run_dir, int(suffix)),
            digest=digests[-1] if digests else None))
    return sorted(ranks, key=lambda r: r.rank)




def inline_markdown(text: str) -> Markup:
    """The Markdown the spec's key docs use, as HTML: `code` spans (the rest escaped)."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: show the text as it is
        return Markup.escape(text)
    return Markup("").join(Markup("<code>{}</code>").format(p) if i % 2 else Markup.escape(p)
                           for i, p in enumerate(parts))


def final_row(rows: Sequence[dict]) -> dict | None:
    """The last evaluated epoch: where the run ended, next to its best."""
    evaluated = [r for r in rows if r.get("val_acc") is not None]
    return evaluated[-1] if evaluated else None


def conclusion(runs: Sequence["Run"]) -> str:
    """One line for the comparison page: which run ends highest, the others after it, and any
    best accuracy that was a peak the run did not keep."""
    done = sorted(((r, r.final) for r in runs if r.final), key=lambda rf: -rf[1]["val_acc"])
    if not done:
        return "No run has evaluated an epoch yet."
    (top, top_final), rest = done[0], done[1:]
    line = (f"{top.label} ends highest: val acc {top_final['val_acc']:.4f} at epoch "
            f"{top_final['epoch']}")
    if rest:
        line += "; then " + ", ".join(f"{r.label} {final['val_acc']:.4f}" for r, final in rest)
    peaks = [(r, r.best) for r, final in done
             if r.best and r.best["val_acc"] - final["val_acc"] >= 0.05]
    if peaks:
        line += ". Best accuracy not kept to the end: " + ", ".join(
            f"{r.label} (best {best['val_acc']:.4f} at epoch {best['epoch']})" for r, best in peaks)
    return line + "."


def read_pictures(run_dir: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(embedded pictures, expected pictures that are missing): the run pictures first in
    their usual order, then any other PNG in the run directory (e.g. a show-batch picture)."""
    names = [n for n in RUN_PICTURES if (run_dir / n).is_file()]
    names += sorted(p.name for p in run_dir.glob("*.png") if p.name not in RUN_PICTURES)
    missing = [n for n in RUN_PICTURES if n not in names]
    return [(n, png_data_uri((run_dir / n).read_bytes())) for n in names], missing


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read one run directory; a UserError names a path that is not one."""
    run_dir = Path(str(path)).expanduser().resolve()  # fire may pass an int
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise UserError(f"run directory {run_dir} {what}; pass the directory `packrun debug` "
                        "printed (<output_dir>/<name>-<YYYYmmdd-HHMMSS>)")
    if not (run_dir / JOB_JSON).is_file():
        raise UserError(f"{run_dir} is not a packrun run directory (it has no {JOB_JSON}); pass "
                        "the directory `packrun debug` printed (<output_dir>/<name>-<stamp>)")
    try:
        rows = read_metrics(run_dir)
    except json.JSONDecodeError as e:
        raise UserError(f"{run_dir}: metrics.jsonl is corrupt ({e})") from None
    pictures, missing = read_pictures(run_dir)
    spec = spec_from_json(run_dir)
    return Run(label=label or spec.name, path=run_dir, spec=spec, rows=rows, pictures=pictures,
               missing_pictures=missing, ranks=read_rank_logs(run_dir))


def spec_groups(spec: JobSpec) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """[(group, [(key, value as in a job file, doc)])] in declaration order."""
    groups: dict[str, list] = {}
    for name, f in JobSpec.fields().items():
        value = json.dumps(getattr(spec, name))
        groups.setdefault(f.metadata["group"], []).append((name, value, f.metadata["doc"]))
    return list(groups.items())


def spec_differences(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """Keys whose values differ between the runs: what the comparison compares."""
    diffs = []
    for name in JobSpec.fields():
        values = [json.dumps(getattr(r.spec, name)) for r in runs]
        if len(set(values)) > 1:
            diffs.append((name, values))
    return diffs


def comparison_curves(runs: Sequence[Run]) -> str:
    """The runs' curves overlaid, as a PNG data URI."""
    # matplotlib (through the worker's figures) only here: a report of one run needs none
    from src.pictures.visualize import Curve, curves_figure

    fig = curves_figure([Curve.from_metrics(r.label, r.rows) for r in runs if r.rows])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return png_data_uri(buf.getvalue())


def unique_labels(runs: Sequence[Run]) -> None:
    """Runs of one job share a name; fall back to the run directory's name for those."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.label] = counts.get(r.label, 0) + 1
    for r in runs:
        if counts[r.label] > 1:
            r.label = r.path.name


def render_report(runs: Sequence[Run]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined, autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = inline_markdown
    compare = len(runs) > 1
    return env.get_template(TEMPLATE).render(
        runs=runs, compare=compare, generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        curves=comparison_curves(runs) if compare and any(r.rows for r in runs) else None,
        differences=spec_differences(runs) if compare else [],
        conclusion=conclusion(runs) if compare else "",
        spec_groups=spec_groups, title=" vs ".join(r.label for r in runs))


def default_out(run_dirs: Sequence[Path]) -> Path:
    return run_dirs[0] / REPORT_HTML if len(run_dirs) == 1 else Path.cwd() / REPORT_HTML


def write_report(run_dirs: Sequence[str | Path], out: str | Path | None = None,
                 labels: Sequence[str] | None = None) -> Path:
    """Write the report of `run_dirs` (compared when several) to `out` and return its path.
    `labels` name the runs (default: each job's name)."""
    if not run_dirs:
        raise UserError("give at least one run directory: packrun report RUN_DIR [RUN_DIR ...]")
    if labels is not None and len(labels) != len(run_dirs):
        raise UserError(f"{len(labels)} labels for {len(run_dirs)} run directories")
    runs = [load_run(d, labels[i] if labels else None) for i, d in enumerate(run_dirs)]
    if not labels:
        unique_labels(runs)
    target = Path(out).expanduser() if out else default_out([r.path for r in runs])
    if target.is_dir():
        target = target / REPORT_HTML
    if not target.parent.is_dir():
        raise UserError(f"--out {target}: directory {target.parent} does not exist; create it or "
                        "pick another path")
    write_atomic(target, render_report(runs))
    return target.resolve()
