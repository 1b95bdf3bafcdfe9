"""metrics.jsonl: one JSON object per epoch, written by the main rank, read by demo, status and
report. No MindSpore import."""

from __future__ import annotations

import json
from pathlib import Path

from launcher.core.rundir.names import METRICS as METRICS_FILE


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows so far; a last line that is not JSON yet is a row being written, left out."""
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    rows = []
    for n, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines) - 1:
                raise
    return rows


def best_row(rows: list[dict]) -> dict | None:
    """The evaluated epoch with the highest accuracy (the latest of equals, as best.ckpt keeps)."""
    evaluated = [r for r in rows if r.get("val_acc") is not None]
    return max(evaluated, key=lambda r: (r["val_acc"], r["epoch"]), default=None)


def metrics_text(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)
