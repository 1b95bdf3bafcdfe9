"""The failure report: what a dying worker leaves (logs/worker_<rank>.error.json) and what the
control plane writes for each failed attempt (logs/attempt_<k>/failure.json, the newest also as
RUN_DIR/failure.json), and the one-or-two-line summary the console and `packrun status` print.

worker_<rank>.error.json (torchrun's `@record` error file is the model):
  rank, host, pid, attempt, time, type, message, traceback, epoch, step
failure.json:
  attempt, max_attempts, rank (which failed first; null: none identified), host, exit_code (null
  when killed), signal (number or null), signal_name, first_error (the first error line of that
  rank's error.json or log, "" if none), reason (the supervisor's words), log (path),
  action: "restarted" | "gave up" | "not retryable", time,
  explanation (only when a known error line was found, launcher/core/ascend/signatures.py):
    {code, line, file, rank, explanation, next_step}
  stall (only when the stall watchdog ended the attempt, launcher/supervise/watchdog.py):
    silent_s, bound_s, bound ("stall_timeout" | "startup_timeout"), rank (the one that differs
    from the others, or null), why, per_rank: [{rank, stage, where, epoch, step, eval_batch, pid,
    answered (its stacks came), state (why not), top_frame, stack (its dump's path)}]
No MindSpore import: the worker writes its file with the same module the launcher reads it with.
"""

from __future__ import annotations

import json
import os
import re
import signal as signals
import socket
import time
import traceback
from pathlib import Path

from launcher.core.ascend import signatures
from launcher.core.rundir import schema
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.names import (
    ASCEND_LOG_PREFIX,
    ATTEMPT_ENV,
    FAILURE_JSON,
    LOGS,
    attempt_logs,
    worker_error,
    worker_log,
    worker_pid,
)
from launcher.core.rundir.schema import stamped

RESTARTED, GAVE_UP, NOT_RETRYABLE = "restarted", "gave up", "not retryable"
# The first line of a log that says what went wrong.
ERROR_LINE = re.compile(r"^(packrun: error: .*|\w+(?:\.\w+)*(?:Error|Exception): .*|"
                        r"Traceback \(most recent call last\):)$", re.M)


# What launchers log about a worker that died: msrun (each second) "Worker process PID exit
# with exception. Error code: -9."; Open MPI "... with PID PID on node N exited on signal 9".
KILLED_BY = (r"Worker process {pid} exit with exception\. Error code: -(\d+)",
             r"PID {pid} on node \S+ exited on signal (\d+)")


def killed_pids(text: str) -> dict[int, int]:
    """{pid: signal} of every worker a launcher's log `text` says a signal killed."""
    found: dict[int, int] = {}
    for pattern in KILLED_BY:
        for m in re.finditer(pattern.format(pid=r"(\d+)"), text):
            found.setdefault(int(m.group(1)), int(m.group(2)))
    return found


def killed_rank(run_dir: Path, ranks, killed: dict[int, int]) -> tuple[int, int] | None:
    """(rank, signal) of the first of `ranks` whose pid file names a pid in `killed`
    (killed_pids of a launcher's log), None when none of them was killed."""
    if not killed:
        return None
    for rank in ranks:
        try:
            pid = int((Path(run_dir) / worker_pid(rank)).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid in killed:
            return rank, killed[pid]
    return None


def killed_by(launcher_logs: list[Path], pid: int) -> int | None:
    """The signal a launcher's log says killed worker `pid`, if one says so."""
    for path in launcher_logs:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for pattern in KILLED_BY:
            m = re.search(pattern.format(pid=pid), text)
            if m:
                return int(m.group(1))
    return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_worker_error(run_dir: Path, rank: int | None, exc: BaseException, position) -> None:
    """Called by a worker dying of `exc` (src/train.py); `position` is the training Position
    (epoch, step) or None before training started. Never raises: the exception is the news."""
    try:
        if rank is None or not (Path(run_dir) / LOGS).is_dir():
            return
        record = dict(
            rank=rank, host=socket.gethostname(), pid=os.getpid(),
            attempt=int(os.environ.get(ATTEMPT_ENV, "1") or 1), time=_now(),
            type=type(exc).__name__, message=str(exc),
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            epoch=getattr(position, "epoch", None), step=getattr(position, "step", None))
        write_atomic(Path(run_dir) / worker_error(rank), json.dumps(record, indent=1) + "\n")
    except Exception:  # noqa: BLE001 (a failing report must not hide the failure)
        pass


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def first_error(run_dir: Path, rank: int | None) -> str:
    """The rank's error in one line: `Type: message` from its error.json, else the first error
    line of its log (the one after a Traceback header, when that is the first)."""
    if rank is None:
        return ""
    err = read_json(run_dir / worker_error(rank))
    if err:
        message = (err.get("message") or "").strip().splitlines()
        return f"{err.get('type')}: {message[0] if message else ''}".strip()[:300]
    try:
        text = (run_dir / worker_log(rank)).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    for m in ERROR_LINE.finditer(text):
        if not m.group(0).startswith("Traceback"):
            return m.group(0)[:300]
    return ""


EXPLAIN_READ_BYTES = 1 << 20   # the end of each log read for error signatures
EXPLAIN_MAX_FILES = 256


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - EXPLAIN_READ_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _rank_of(name: str) -> int | None:
    m = re.search(r"(?:worker_|rank_)(\d+)", name)
    return int(m.group(1)) if m else None


def explanation(run_dir: Path, rank: int | None) -> dict | None:
    """What the logs of a failed launch say in a known error line (CANN's EJ0001, EI0002, ...,
    msrun's), explained: the failing rank's log and CANN plog first, then every other log of
    the run directory's logs/. None when no line is known."""
    logs = Path(run_dir) / LOGS
    first: list[Path] = []
    if rank is not None:
        first = [Path(run_dir) / worker_log(rank)]
        first += sorted((Path(run_dir) / f"{ASCEND_LOG_PREFIX}{rank}").rglob("*.log"))
    rest = sorted(p for p in logs.glob("*") if p.is_file() and p.suffix in (".log", ".out"))
    rest += sorted(p for p in logs.glob("ascend/rank_*/**/*.log"))
    seen: set[Path] = set()
    texts: list[tuple[str, int | None, str]] = []
    for path in first + rest:
        if path in seen or len(seen) >= EXPLAIN_MAX_FILES or not path.is_file():
            continue
        seen.add(path)
        texts.append((str(path.relative_to(run_dir)), _rank_of(str(path.relative_to(logs))),
                      _tail(path)))
    found = signatures.find(texts)
    return found.to_dict() if found else None


def failure_record(run_dir: Path, *, attempt: int, max_attempts: int, rank: int | None,
                   host: str, exit_code: int | None, signal: int | None, reason: str,
                   action: str, node: int | None = None, stall: dict | None = None) -> dict:
    err = read_json(run_dir / worker_error(rank)) if rank is not None else None
    if err and err.get("host"):
        host = err["host"]
    name = signals.Signals(signal).name if signal else None
    return stamped(dict(
        attempt=attempt, max_attempts=max_attempts, rank=rank, host=host, node=node,
        exit_code=exit_code, signal=signal, signal_name=name,
        epoch=err.get("epoch") if err else None, step=err.get("step") if err else None,
        first_error=first_error(run_dir, rank), reason=reason,
        log=str(run_dir / attempt_logs(attempt) / Path(worker_log(rank)).name)
        if rank is not None else "",
        action=action, time=_now()) | _explained(run_dir, rank)
        | ({"stall": stall} if stall else {}))


def _explained(run_dir: Path, rank: int | None) -> dict:
    try:
        found = explanation(run_dir, rank)
    except Exception:  # noqa: BLE001 (an explanation is a help, never a second failure)
        return {}
    return {"explanation": found} if found else {}


def write_failure(run_dir: Path, record: dict) -> None:
    """logs/attempt_<k>/failure.json and RUN_DIR/failure.json (the newest)."""
    text = json.dumps(stamped(record), indent=1) + "\n"
    folder = run_dir / attempt_logs(record["attempt"])
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / FAILURE_JSON, text)
    write_atomic(run_dir / FAILURE_JSON, text)


def read_failure(run_dir: Path) -> dict | None:
    """The newest failed attempt's record; a newer packrun's is an error (schema.py)."""
    return schema.read_json(Path(run_dir) / FAILURE_JSON)


def summary(record: dict) -> str:
    """One or two lines: who failed how, the first error, what packrun did."""
    who = f"rank {record['rank']}" if record.get("rank") is not None else "the launch"
    if record.get("host"):
        who += f" on {record['host']}"
    if record.get("node") is not None:
        who += f" (node {record['node']})"
    stall = record.get("stall")
    if stall:
        how = f"stalled: {_stalled(stall)}"
    elif record.get("signal"):
        how = f"was killed by signal {record['signal']} ({record['signal_name']})"
    elif record.get("exit_code") is not None:
        how = f"exited with status {record['exit_code']}"
    else:
        how = "was killed"
    where = f" in epoch {record['epoch']} step {record['step']}" \
        if record.get("epoch") is not None else ""
    action = record["action"]
    if action == RESTARTED:
        then = f"restarting from last.ckpt (attempt {record['attempt'] + 1} of " \
               f"{record['max_attempts']})"
    elif action == GAVE_UP:
        then = f"giving up after {record['attempt']} attempt(s) (max_restarts reached)"
    else:
        then = "not retried (bad input or a stop: fix it and resume)"
    line = f"attempt {record['attempt']} failed: {who} {how}{where}; {then}"
    if record.get("first_error"):
        line += f"\n  first error: {record['first_error']}"
    found = record.get("explanation")
    if isinstance(found, dict) and found.get("explanation"):
        line += (f"\n  {found.get('code')} in {found.get('file')}: {found['explanation']}"
                 f"\n  next: {found.get('next_step')}")
    if stall:
        line += _stuck(stall)
    return line


def _stalled(stall: dict) -> str:
    """`no rank made progress for 31 s (stall_timeout 30 s) at training epoch 2 step 0/3`."""
    odd = next((r for r in stall.get("per_rank", []) if r["rank"] == stall.get("rank")), None)
    where = f" at {odd['where']}" if odd else ""
    return (f"no rank made progress for {stall['silent_s']:.0f} s ({stall['bound']} "
            f"{stall['bound_s']:.0f} s){where}")


def _stuck(stall: dict) -> str:
    """The stuck rank's top frame and stack file, or why it has none; why it is the one."""
    lines = f"\n  stuck: {stall['why']}" if stall.get("why") not in (None, "the only rank") \
        else ""
    for r in stall.get("per_rank", []):
        if r["rank"] != stall.get("rank"):
            continue
        if r.get("top_frame"):
            lines += f"\n  top frame of rank {r['rank']}: {r['top_frame']} ({r['stack']})"
        elif not r.get("answered"):
            lines += f"\n  rank {r['rank']} gave no stacks: {r.get('state') or 'no answer'}"
    return lines
