"""`packrun logs RUN_DIR [--follow] [--ranks=0,3] [--grep=REGEX]`: every log of a run, merged.

Each rank's log (logs/worker_<rank>.log) gets a `[rank N]` prefix, the others their own:
`[scheduler]` (msrun's scheduler), `[launcher]` (the launch script's output), `[node N]`
(msrun on node N under Slurm), `[nodeN]` (node N of a launch over ssh: its launch script's
output and its session's messages), `[slurm]` (the batch script's output), `[<name>]` for any other
log. Lines are merged in time order: a line carrying a timestamp (MindSpore's log format, or an
ISO date and time) is placed by it; a line without one keeps its place within its file, after
the timestamped line before it. With --follow, new lines are printed as they arrive, until the
run ends (its state as `packrun ls` reads it: launcher/core/rundir/state.py, and the queue).

This reader is separate from the log followers of `run` / `submit --wait`, which copy rank 0's
log to the console.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from launcher.core.errors import UserError
from launcher.core.rundir.names import CONSOLE_LOG, JOB_JSON, LOGS, SLURM_OUTPUT_GLOB, SWEEP_JSON
from launcher.core.rundir.state import job_id_of
from launcher.runs.listing import live_run_dirs, read_listed, squeue_states

POLL_S = 0.5
STATE_EVERY_S = 2.0   # how often --follow asks whether the run has ended
# 2026-12-01-20:56:11.123.456 (MindSpore) or 2026-12-01 20:56:11[,.]123 / ...T... (ISO, logging)
TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)[- T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,6}))?")
SKIP = {Path(CONSOLE_LOG).name}   # a point's console copy (launcher/sweep/local.py): its
                                  # worker's lines again


def prefix_of(run_dir: Path, path: Path) -> tuple[str, int | None]:
    """(prefix, rank or None) of a log file."""
    stem = path.stem
    if path.parent == run_dir and path.match(SLURM_OUTPUT_GLOB):
        return "[slurm]", None
    if m := re.fullmatch(r"worker_(\d+)", stem):
        return f"[rank {m.group(1)}]", int(m.group(1))
    if m := re.fullmatch(r"msrun-node(\d+)", stem):
        return f"[node {m.group(1)}]", None
    if m := re.fullmatch(r"node(\d+)", stem):   # node K of a launch over ssh (logs/node<K>.out)
        return f"[node{m.group(1)}]", None
    return f"[{stem}]", None


def log_files(run_dir: Path) -> list[Path]:
    logs = run_dir / LOGS
    found = sorted(run_dir.glob(SLURM_OUTPUT_GLOB))
    if logs.is_dir():
        found += sorted((p for p in logs.iterdir() if p.suffix in (".log", ".out")
                         and p.name not in SKIP and p.is_file()), key=_order)
    return found


def _order(p: Path):
    m = re.fullmatch(r"worker_(\d+)", p.stem)
    return (0, int(m.group(1)), "") if m else (1, 0, p.name)


def timestamp(line: str) -> float | None:
    m = TIMESTAMP.search(line, 0, 120)
    if not m:
        return None
    y, mo, d, h, mi, s, frac = m.groups()
    try:
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s)).timestamp()
    except ValueError:
        return None
    return t + (int(frac) / 10 ** len(frac) if frac else 0.0)


@dataclass
class Source:
    """One log file, read incrementally: whole lines only until `final`."""
    path: Path
    prefix: str
    rank: int | None
    order: int
    offset: int = 0
    partial: bytes = b""
    last_ts: float | None = None
    restarted: bool = False

    def read(self, final: bool = False) -> list[tuple[float | None, str]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, 2)
                if f.tell() < self.offset:  # rewritten (a restarted launch)
                    self.offset, self.partial, self.restarted = 0, b"", True
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        cut = len(data) if final else data.rfind(b"\n") + 1
        self.partial = data[cut:]
        text = data[:cut].decode("utf-8", errors="replace")
        raws = text.split("\n")
        if text.endswith("\n") or not text:
            raws.pop()
        out = []
        for raw in raws:
            line = raw.rstrip("\r").split("\r")[-1].rstrip()  # what a terminal showed last
            ts = timestamp(line)
            if ts is not None:
                self.last_ts = ts
            out.append((ts if ts is not None else self.last_ts, line))
        return out


def merge(batches: list[tuple[Source, list[tuple[float | None, str]]]]) -> list[str]:
    """Lines of several sources in time order; within a source, file order. A line without a
    timestamp takes the one before it in its file; the lines before a file's first timestamp
    take that first one (they were written before it)."""
    keyed = []
    for src, lines in batches:
        t = next((ts for ts, _ in lines if ts is not None), None)
        for n, (ts, line) in enumerate(lines):
            if ts is not None and t is not None:
                t = max(t, ts)  # never reorder a file's own lines
            keyed.append(((t is not None, t or 0.0, src.order, n), f"{src.prefix} {line}"))
    # files without any timestamp first (in source order), then everything by time
    keyed.sort(key=lambda k: k[0])
    return [text for _, text in keyed]


def _ranks(ranks) -> set[int] | None:
    if ranks is None or ranks == "":
        return None
    items = ranks if isinstance(ranks, (list, tuple)) else str(ranks).split(",")
    out = set()
    for r in items:
        r = str(r).strip()
        if not r.isdigit():
            raise UserError(f"--ranks {ranks!r}: give rank numbers, e.g. --ranks=0,3")
        out.add(int(r))
    return out


def _grep(pattern) -> re.Pattern | None:
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(str(pattern))
    except re.error as e:
        raise UserError(f"--grep {pattern!r} is not a valid regular expression ({e})") from None


class Logs:
    def __init__(self, run_dir: Path, ranks: set[int] | None, grep: re.Pattern | None):
        self.run_dir, self.ranks, self.grep = run_dir, ranks, grep
        self.sources: dict[Path, Source] = {}

    def _discover(self) -> None:
        for path in log_files(self.run_dir):
            if path not in self.sources:
                prefix, rank = prefix_of(self.run_dir, path)
                if self.ranks is not None and rank not in self.ranks:
                    continue
                self.sources[path] = Source(path, prefix, rank, len(self.sources))

    def lines(self, final: bool = False) -> list[str]:
        self._discover()
        batches = []
        out = []
        for src in self.sources.values():
            got = src.read(final)
            if src.restarted:
                out.append(f"[packrun] {src.path} started again")
                src.restarted = False
            batches.append((src, got))
        merged = merge(batches)
        if self.grep is not None:
            merged = [m for m in merged if self.grep.search(m.split("] ", 1)[-1])]
        return out + merged


def _going(run_dir: Path) -> bool:
    """Whether the run is still going (its state, as `packrun ls` reads it)."""
    job_id = job_id_of(run_dir)
    st = read_listed(run_dir, squeue_states({job_id} - {""}), live_run_dirs())
    return st is not None and st.state.is_going


def logs_command(run_dir: str, *, follow: bool = False, ranks=None, grep=None,
                 console: TextIO = sys.stdout, poll_s: float = POLL_S,
                 state_every_s: float = STATE_EVERY_S) -> int:
    d = Path(str(run_dir)).expanduser().resolve()
    if not d.is_dir():
        raise UserError(f"run directory {d} does not exist; pass a directory `packrun ls` lists")
    if not (d / JOB_JSON).is_file():
        hint = " (a sweep: pass one of its points' directories)" if (d / SWEEP_JSON).is_file() \
            else ""
        raise UserError(f"{d} is not a packrun run directory (no {JOB_JSON}){hint}")
    logs = Logs(d, _ranks(ranks), _grep(grep))
    try:
        if not follow:
            _write(console, logs.lines(final=True))
            return 0
        checked = 0.0
        while True:
            _write(console, logs.lines())
            if time.monotonic() - checked > state_every_s:
                checked = time.monotonic()
                if not _going(d):
                    break
            time.sleep(poll_s)
        _write(console, logs.lines(final=True))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `packrun logs RUN | head`
        sys.stderr.close()
        return 0
    return 0


def _write(console: TextIO, lines: list[str]) -> None:
    if lines:
        console.write("".join(line + "\n" for line in lines))
        console.flush()
