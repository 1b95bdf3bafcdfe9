"""Slurm hostlist expressions (`node[01-04,07]`, `rack[1-2]-n[01-02]`, `a1,b[2-3]`) -> host names.

Pure Python, the same expansion as `scontrol show hostnames`: comma-separated entries, each a
name with any number of bracketed range lists; several brackets expand as a product, the
leftmost varying slowest; a range keeps the zero padding of its first number (`[08-10]` gives
08 09 10). Used for the job key `hosts` and, in a Slurm job, where `scontrol` is missing:

    python -m launcher.nodelist 'node[01-04,07]'     # one host per line
"""

from __future__ import annotations

import itertools
import re
import sys

from launcher.errors import UserError

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def _split_top_level(expr: str) -> list[str]:
    """Split at the commas that are outside brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(expr):
        if c == "[":
            depth += 1
            if depth > 1:
                raise UserError(f"hostlist {expr!r}: nested '[' at position {i + 1}")
        elif c == "]":
            depth -= 1
            if depth < 0:
                raise UserError(f"hostlist {expr!r}: ']' without '[' at position {i + 1}")
        elif c == "," and depth == 0:
            parts.append(expr[start:i])
            start = i + 1
    if depth:
        raise UserError(f"hostlist {expr!r}: '[' is never closed")
    parts.append(expr[start:])
    return [p for p in parts if p]


def _expand_ranges(body: str, expr: str) -> list[str]:
    values = []
    for item in body.split(","):
        m = _RANGE.fullmatch(item)
        if not m:
            raise UserError(f"hostlist {expr!r}: [{body}] holds {item!r}; a bracket holds numbers "
                            "and ranges such as [1-4,7] or [01-10]")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise UserError(f"hostlist {expr!r}: range {item} runs backwards")
        values += [str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1)]
    return values


def _expand_entry(entry: str, expr: str) -> list[str]:
    pieces = re.split(r"\[([^\]]*)\]", entry)  # text, bracket, text, bracket, ..., text
    choices = [[p] if i % 2 == 0 else _expand_ranges(p, expr) for i, p in enumerate(pieces)]
    return ["".join(parts) for parts in itertools.product(*choices)]


def expand(expr: str) -> list[str]:
    """Expand a Slurm hostlist expression into host names, in order."""
    if any(c.isspace() for c in expr):
        raise UserError(f"hostlist {expr!r}: contains whitespace; separate hosts with commas")
    hosts = [h for entry in _split_top_level(expr) for h in _expand_entry(entry, expr)]
    if not hosts:
        raise UserError(f"hostlist {expr!r} names no host")
    return hosts


if __name__ == "__main__":
    try:
        print("\n".join(expand(sys.argv[1] if len(sys.argv) == 2 else "")))
    except UserError as e:
        sys.exit(f"nodelist: error: {e}")
