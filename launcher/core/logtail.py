"""Reading workers' logs for the console: follow one as it grows, show the end of one.

`packrun run` (launcher/supervise/supervisor.py) and `packrun submit --wait`
(launcher/slurm/client.py) stream
rank 0's log with `LogFollower`; their failure reports and `packrun report` show the end of a
log with `tail`, which shows progress lines rewritten with `\\r` as a terminal would.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from launcher.core.worker_output import filter_lines

TAIL_LINES = 20


class LogFollower:
    """Copies what was appended to a log file (which may not exist yet) since the last call to
    `poll`, whole lines only, without MindSpore's INFO/WARNING chatter (that stays in the log);
    `final=True` also copies a last line without its newline. A log that shrank was started
    again (msrun rewrites worker logs when a requeued job restarts): it is followed from its
    start, and the console is told."""

    def __init__(self, path: Path, console: TextIO):
        self.path, self.console, self.offset, self.partial = path, console, 0, b""

    def poll(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, 2)
                if f.tell() < self.offset:
                    self.offset, self.partial = 0, b""
                    self.console.write(f"packrun: {self.path} started again\n")
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        data = self.partial + data
        cut = len(data) if final else data.rfind(b"\n") + 1
        self.partial = data[cut:]
        if cut:
            self.console.write(filter_lines(data[:cut].decode("utf-8", errors="replace")))
            self.console.flush()


def console_text(raw: str) -> str:
    """What a terminal shows for `raw`: of each line's `\\r`-separated updates, the last."""
    # not str.splitlines(): it splits at "\r" too
    return "\n".join(line.rstrip("\r").split("\r")[-1].rstrip() for line in raw.split("\n"))


def tail_lines(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last `n` lines of the log at `path` as a terminal shows them; for a missing log, one
    line that says so."""
    try:
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [f"({path} does not exist)"]
    return console_text(raw).rstrip("\n").splitlines()[-n:]


def tail(path: Path, n: int = TAIL_LINES) -> str:
    """`tail_lines` as one text."""
    return "\n".join(tail_lines(path, n))
