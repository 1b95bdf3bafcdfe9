"""What of a worker's output reaches the console: everything but MindSpore's own INFO / WARNING /
DEBUG log lines (`[INFO] DISTRIBUTED(pid,tid,python):2026-... Event base dispatch success!`),
which stay in the log files. Workers start with GLOG_v=3 (launcher.supervise.debug.worker_env), but
some of MindSpore's C++ layers print at INFO regardless (msrun's RPC start and teardown).
Its ERROR lines, and everything packrun and the tutorial print, pass.
"""

from __future__ import annotations

import re

# `[LEVEL] MODULE(pid,thread,process):YYYY-MM-DD-HH:MM:SS.mmm.uuu [file:line] ...`
CHATTER = re.compile(r"\[(DEBUG|INFO|WARNING)\] [A-Z_]+\(\d+,[0-9a-fA-Fx]+,[^)]*\):\d{4}-")


def is_chatter(line: str) -> bool:
    return CHATTER.match(line) is not None


def filter_lines(text: str) -> str:
    """`text` (whole lines) without MindSpore's chatter lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_chatter(line))


class ChatterFilter:
    """For a stream read in chunks (a progress line rewritten with `\\r` must reach the console
    live): complete lines are filtered; an unfinished line is passed on at once unless it may
    be the start of a chatter line (it starts with `[`), which waits for its end."""

    def __init__(self):
        self.held = ""

    def feed(self, text: str) -> str:
        text = self.held + text
        self.held = ""
        *lines, rest = text.split("\n")
        out = [line + "\n" for line in lines if not is_chatter(line)]
        if rest.startswith("[") and (len(rest) < 120 or is_chatter(rest)):
            self.held = rest
        else:
            out.append(rest)
        return "".join(out)

    def flush(self) -> str:
        rest, self.held = self.held, ""
        return "" if is_chatter(rest) else rest
