"""The summary of several runs (a sweep's points, the demo's three runs): one row per run with
the values that differ, state, best val acc and its epoch, last val acc and time, sorted by best
accuracy; and the side-by-side report.html with the best run marked.

`packrun sweep-report SWEEP_DIR` and `packrun report SWEEP_DIR` print / write both; `packrun
sweep` prints the table at its end; `packrun demo` prints its table with `summary_table`.
Everything is read from the run directories (launcher/core/rundir/state.py, the one reader).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.names import JOB_JSON, REPORT_HTML, SLURM_JOB_ID
from launcher.core.rundir.state import RunState, job_id_of, read_run_state
from launcher.core.rundir.sweepdir import read_sweep
from launcher.runs.listing import (
    fmt_acc,
    fmt_duration,
    live_run_dirs,
    squeue_states,
    sweep_state,
)
from launcher.runs.report import write_report

BEST_MARK = "(best)"


@dataclass
class Row:
    label: str                 # the point's differing values, or the run's label
    values: list[str]          # one per column key
    state: RunState
    time_s: float | None = None   # the caller's wall time, else the run directory's duration

    @property
    def sort_key(self):
        acc = self.state.best_acc
        return (acc is None or (isinstance(acc, float) and math.isnan(acc)), -(acc or 0.0))


def summary_table(rows: list[Row], keys: list[str], *, sort: bool = True,
                  show_dirs: bool = True) -> str:
    """The table; `keys` head the value columns (["run"] for labelled runs)."""
    if sort:
        rows = sorted(rows, key=lambda r: r.sort_key)
    best = rows[0] if rows and rows[0].state.best_acc is not None and sort else \
        max((r for r in rows if r.state.best_acc is not None),
            key=lambda r: r.state.best_acc or 0.0, default=None)
    header = [*keys, "state", "best val acc", "best epoch", "last val acc", "time"]
    if show_dirs:
        header.append("run directory")
    body = []
    for r in rows:
        st = r.state
        t = r.time_s if r.time_s is not None else st.duration
        line = [*r.values, st.state.listed, fmt_acc(st.best_acc) + (" *" if r is best else ""),
                str(st.best_epoch) if st.best_acc is not None else "-",
                fmt_acc(st.last_acc), fmt_duration(t)]
        if show_dirs:
            line.append(str(st.path))
        body.append(line)
    numeric = {len(keys) + i for i in (1, 2, 3, 4)}
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    out = []
    for n, line in enumerate([header, *body]):
        cells = [c.rjust(w) if i in numeric else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("-" * len(out[0]))
    if best is not None:
        out.append(f"* best: {best.label}")
    return "\n".join(out)


def run_rows(run_dirs: list[Path], labels: list[str],
             times: list[float] | None = None) -> list[Row]:
    """Rows for labelled runs that have ended (the demo's): state read from each run
    directory's files (no process-table look: a worker's helpers may still be exiting)."""
    rows = []
    for i, (d, label) in enumerate(zip(run_dirs, labels)):
        d = Path(d).resolve()
        st = read_run_state(d)
        if st is None:
            raise UserError(f"{d} is not a packrun run directory (no {JOB_JSON})")
        rows.append(Row(label, [label], st, times[i] if times else None))
    return rows


def _sweep(sweep_dir: str | Path) -> tuple[dict, list[Row]]:
    """(sweep.json, one row per point in point order)."""
    doc = read_sweep(sweep_dir)
    d = doc["path"]
    ids = {job_id_of(p.parent) for p in [d / SLURM_JOB_ID, *d.glob(f"*/{SLURM_JOB_ID}")]} - {""}
    agg = sweep_state(d, squeue_states(ids), live_run_dirs())
    by_name = {st.path.name: st for st in (agg.points if agg else [])}
    rows = []
    for p in doc["points"]:
        st = by_name.get(p["dir"])
        if st is None:
            raise UserError(f"{d}: point {p['index'] + 1}'s run directory {p['dir']} is missing "
                            "(no job.json)")
        values = [_value(p["values"].get(k)) for k in doc["keys"]]
        rows.append(Row(", ".join(f"{k}={v}" for k, v in zip(doc["keys"], values)), values, st))
    return doc, rows


def _value(v) -> str:
    if v == "":
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def summary_text(sweep_dir: str | Path) -> str:
    doc, rows = _sweep(sweep_dir)
    return (f"sweep {doc['path'].name}: {len(rows)} point(s)\n"
            + summary_table(rows, doc["keys"], show_dirs=False)
            + f"\nrun directories under {doc['path']}")


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """report.html of every point side by side (launcher/runs/report.py), the best point marked, in
    the order of the summary; default SWEEP_DIR/report.html."""
    doc, rows = _sweep(sweep_dir)
    rows = sorted(rows, key=lambda r: r.sort_key)
    labels = [r.label + (f" {BEST_MARK}" if i == 0 and r.state.best_acc is not None else "")
              for i, r in enumerate(rows)]
    return write_report([r.state.path for r in rows], out or doc["path"] / REPORT_HTML,
                        labels=labels)


def sweep_report_command(sweep_dir: str, out: str | None = None) -> str:
    text = summary_text(sweep_dir)
    return f"{text}\nreport: {write_sweep_report(sweep_dir, out)}"
