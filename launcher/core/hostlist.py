"""Slurm hostlist expressions (`node[01-04,07]`, `rack[1-2]-n[01-02]`, `a1,b[2-3]`) -> host names.

Pure Python, the same expansion as `scontrol show hostnames` (checked against Slurm 22/23):
comma-separated entries, each a name with any number of bracketed range lists, and no text after
the last bracket; several brackets expand as a product in Slurm's order (the last bracket varies
fastest, then the first, the second, ...: `a[1-2]b[1-2]c[1-2]` gives a1b1c1 a1b1c2 a2b1c1 ...);
a range keeps the zero padding of its first number (`[08-10]` gives 08 09 10). At most
MAX_HOSTS names, counted before anything is expanded. Used for the job key `hosts` and, in a
Slurm job, where `scontrol` is missing:

    python -m launcher.node hostnames 'node[01-04,07]'     # one host per line
"""

from __future__ import annotations

import itertools
import re

from launcher.core.errors import UserError

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
MAX_HOSTS = 65536  # Slurm's own limit for one range (MAX_RANGE in hostlist.c)


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


def _ranges(body: str, expr: str) -> list[tuple[int, int, int]]:
    """(first, last, zero-padded width) of each item of one bracket."""
    out = []
    for item in body.split(","):
        m = _RANGE.fullmatch(item)
        if not m:
            raise UserError(f"hostlist {expr!r}: [{body}] holds {item!r}; a bracket holds numbers "
                            "and ranges such as [1-4,7] or [01-10]")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise UserError(f"hostlist {expr!r}: range {item} runs backwards")
        out.append((int(lo), int(hi), len(lo)))
    return out


def _pieces(entry: str, expr: str) -> list:
    """text, ranges, text, ranges, ..., text of one entry."""
    pieces = re.split(r"\[([^\]]*)\]", entry)
    if len(pieces) > 1 and pieces[-1]:
        raise UserError(f"hostlist {expr!r}: {pieces[-1]!r} after the last ']'; Slurm rejects "
                        "text after a bracket (write e.g. n[1-2] or rack[1-2]-n[1-2])")
    return [p if i % 2 == 0 else _ranges(p, expr) for i, p in enumerate(pieces)]


def _count(pieces: list) -> int:
    n = 1
    for ranges in pieces[1::2]:
        n *= sum(hi - lo + 1 for lo, hi, _ in ranges)
    return n


def _expand_entry(pieces: list) -> list[str]:
    texts, brackets = pieces[0::2], [
        [str(n).zfill(width) for lo, hi, width in ranges for n in range(lo, hi + 1)]
        for ranges in pieces[1::2]]
    if not brackets:
        return [texts[0]]
    # Slurm's order: the last bracket fastest, then the first, the second, ...
    order = [*range(len(brackets) - 2, -1, -1), len(brackets) - 1] if len(brackets) > 1 else [0]
    names = []
    for combo in itertools.product(*(brackets[i] for i in order)):
        chosen = dict(zip(order, combo))
        names.append("".join(t + (chosen[i] if i < len(brackets) else "")
                             for i, t in enumerate(texts)))
    return names


def expand(expr: str) -> list[str]:
    """Expand a Slurm hostlist expression into host names, in order."""
    if any(c.isspace() for c in expr):
        raise UserError(f"hostlist {expr!r}: contains whitespace; separate hosts with commas")
    entries = [_pieces(entry, expr) for entry in _split_top_level(expr)]
    total = sum(_count(p) for p in entries)
    if total > MAX_HOSTS:
        raise UserError(f"hostlist {expr!r} names {total} hosts; Slurm takes at most "
                        f"{MAX_HOSTS} (check the ranges)")
    hosts = [h for pieces in entries for h in _expand_entry(pieces)]
    if not hosts:
        raise UserError(f"hostlist {expr!r} names no host")
    return hosts
