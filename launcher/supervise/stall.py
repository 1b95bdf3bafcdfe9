"""The stall watchdog's decisions, without processes or files: `StallWatch` is fed every rank's
progress record (launcher/core/rundir/progress.py) and the watcher's own clock and says when the
job has stalled; `odd_rank` names the rank that differs from the others once their stacks are in;
`top_frame` reads a faulthandler dump. launcher/supervise/watchdog.py does the process side
(reading the records, asking for stacks, stopping the launch).

Progress is a change of a rank's `seq` or `pid` (a restarted worker), seen on the watcher's
clock: hosts' clocks need not agree, so a record's own `time` is never compared with ours.

The bound on silence (`StallWatch.bound`):
  - `startup_timeout` (at least `stall_timeout`) while some rank has no record yet, is STARTING
    or COMPILING (before its first step), or is in an evaluation, caching or picture pass whose
    first batch has not ended and this process has not ended any batch before (the first batch
    compiles the evaluation graph);
  - otherwise `stall_timeout`; in sink mode (records come once per sink chunk) plus the longest
    interval seen between two step records of one process.
Ranks that are DONE are never waited for; when every rank is DONE nothing stalls. Ranks WAITING in
a collective while rank 0 evaluates are not stalled as long as rank 0's batches come: the rule is
about the whole job ("no rank made progress"), not about each rank.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from launcher.core.rundir.progress import Event, Progress, Stage

# Stages before a rank's first step: imports, data, pretrained weights, graph compilation.
STARTUP_STAGES = (Stage.STARTING, Stage.COMPILING)
# Stages made of batches whose first one may compile a graph (the evaluation network).
BATCH_STAGES = (Stage.EVALUATING, Stage.CACHING, Stage.FINISHING)


@dataclass
class _Rank:
    record: Progress | None = None
    batched: bool = False       # this process has ended an evaluation/caching batch before
    last_step_at: float | None = None


@dataclass(frozen=True)
class Stall:
    """The job made no progress for `silent_s` seconds, over its bound `bound_s` (which one:
    `bound_name`, "stall_timeout" or "startup_timeout"); `last` holds each expected rank's last
    record (None: none yet)."""
    silent_s: float
    bound_s: float
    bound_name: str
    last: dict[int, Progress | None] = field(default_factory=dict)

    def describe(self) -> str:
        return (f"no rank made progress for {self.silent_s:.0f} s ({self.bound_name} "
                f"{self.bound_s:.0f} s)")


class StallWatch:
    """One state machine per attempt. `feed(records, now)` after each look at the records
    (`records`: rank -> its newest Progress; `now`: the watcher's monotonic clock) returns a
    Stall once the silence exceeds the bound, else None. `world`: the ranks expected (0..world-1);
    `attempt`: records of another attempt are ignored (stale files)."""

    def __init__(self, world: int, stall_timeout: float, startup_timeout: float, now: float, *,
                 sink: bool = False, attempt: int | None = None):
        self.world, self.stall_timeout = world, float(stall_timeout)
        self.startup_timeout = max(float(startup_timeout), self.stall_timeout)
        self.sink, self.attempt = sink, attempt
        self.ranks = {r: _Rank() for r in range(world)}
        self.last_progress = now
        self.longest_chunk = 0.0   # sink mode: the longest interval between two step records

    @property
    def enabled(self) -> bool:
        return self.stall_timeout > 0

    def feed(self, records: dict[int, Progress], now: float) -> Stall | None:
        for rank, record in records.items():
            if self.attempt is not None and record.attempt != self.attempt:
                continue
            state = self.ranks.setdefault(rank, _Rank())
            self._see(state, record, now)
        if not self.enabled or self.all_done():
            return None
        bound, name = self.bound()
        silent = now - self.last_progress
        if silent <= bound:
            return None
        return Stall(silent, bound, name, {r: s.record for r, s in sorted(self.ranks.items())})

    def _see(self, state: _Rank, record: Progress, now: float) -> None:
        old = state.record
        if old is not None and (old.pid, old.seq) == (record.pid, record.seq):
            return  # nothing new
        if old is None or old.pid != record.pid:  # a (new) process: it compiles again
            state.batched, state.last_step_at = False, None
        state.record = record
        self.last_progress = now
        if record.event is Event.BATCH:
            state.batched = True
        if record.event is Event.STEP:
            if self.sink and state.last_step_at is not None:
                self.longest_chunk = max(self.longest_chunk, now - state.last_step_at)
            state.last_step_at = now
        elif record.stage not in (Stage.TRAINING,):
            state.last_step_at = None  # an interval across an evaluation is not a chunk

    def all_done(self) -> bool:
        return bool(self.ranks) and all(s.record is not None and s.record.stage is Stage.DONE
                                        for s in self.ranks.values())

    def starting(self) -> bool:
        """Whether some rank is where a compilation may be running (the startup bound)."""
        for s in self.ranks.values():
            r = s.record
            if r is None or r.stage in STARTUP_STAGES:
                return True
            if r.stage in BATCH_STAGES and r.eval_batch == 0 and not s.batched:
                return True
        return False

    def bound(self) -> tuple[float, str]:
        """The silence allowed now, and the key it comes from."""
        if self.starting():
            return self.startup_timeout, "startup_timeout"
        return self.stall_timeout + (self.longest_chunk if self.sink else 0.0), "stall_timeout"


# ---------------------------------------------------------------------------------------------
# Who is stuck: the rank that differs from the others
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """What a rank's stack request gave: `answered` (its faulthandler wrote a dump), `text` (the
    dump), `state` (the process state when it did not answer: "stopped", "disk-sleep", "gone",
    "not on this host", ...)."""
    answered: bool
    text: str = ""
    state: str = ""


# A frame line of a faulthandler dump: `  File "/path/x.py", line 12 in func`.
FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+) in (\S+)', re.M)
THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-f]+) .*:$", re.M)
# Answers of ranks that were not asked: nothing to single a rank out for.
NOT_ASKED = ("not on this host", "no pid", "gone")
# Where a waiting main thread is found: the data pipeline (waiting for a batch) and MindSpore's
# compiled-graph call (where a collective runs).
DATA_PIPELINE = ("/mindspore/dataset/",)


def threads(dump: str) -> list[list[tuple[str, int, str]]]:
    """The threads of one faulthandler dump, each a list of frames (file, line, function),
    innermost first, in the dump's order."""
    headers = [m.start() for m in THREAD.finditer(dump)]
    out = []
    for i, start in enumerate(headers):
        end = headers[i + 1] if i + 1 < len(headers) else len(dump)
        frames = [(f, int(n), fn) for f, n, fn in FRAME.findall(dump[start:end])]
        if frames:
            out.append(frames)
    return out


def _library(path: str) -> bool:
    return "/site-packages/" in path or "/dist-packages/" in path or \
        re.search(r"/lib/python3\.\d+/", path) is not None


def top_frame(dump: str) -> str:
    """The frame to name for a rank: the innermost frame of the first thread whose innermost
    frame is the job's own code (not the standard library or an installed package), else the
    innermost frame of the first thread; "" without a dump."""
    ts = threads(dump)
    if not ts:
        return ""
    own = [t for t in ts if not _library(t[0][0])]
    f, n, fn = (own or ts)[0][0]
    return f'File "{f}", line {n} in {fn}'


def in_data_pipeline(dump: str) -> bool:
    """Whether a thread waits in the data pipeline (MindSpore's dataset iterator) at its
    innermost frames: a rank waiting for its next batch, not in a collective."""
    return any(any(p in f for p in DATA_PIPELINE) for t in threads(dump) for f, _, _ in t[:3])


def odd_rank(last: dict[int, Progress | None],
             answers: dict[int, Answer]) -> tuple[int | None, str]:
    """The rank that differs from the others in a stall, and why; (None, why) when none does.
    In order: a rank that did not answer the stack request while others did (frozen, in the
    kernel); a rank whose progress is not the majority's (behind, or not WAITING while others
    wait for it); a rank waiting in its data pipeline while the others are not (they wait in the
    collective for it); with one rank, that rank."""
    ranks = sorted(last)
    if len(ranks) == 1:
        return ranks[0], "the only rank"
    silent = [r for r in ranks if r in answers and not answers[r].answered
              and answers[r].state not in NOT_ASKED]
    spoke = [r for r in ranks if r in answers and answers[r].answered]
    if silent and spoke:
        r = silent[0]
        return r, f"it did not answer the stack request ({answers[r].state or 'no dump'})"
    missing = [r for r in ranks if last[r] is None]
    if missing and len(missing) < len(ranks):
        return missing[0], "it never reported progress"
    seen = {r: p for r, p in last.items() if p is not None}
    if seen:
        waiting = [r for r, p in seen.items() if p.stage is Stage.WAITING]
        busy = [r for r in seen if r not in waiting]
        if waiting and len(busy) == 1:
            r = busy[0]
            return r, f"the others wait for it ({seen[r].where()})"
        key = {r: (p.stage, p.global_step, p.eval_batch) for r, p in seen.items()}
        counts = Counter(key.values())
        if len(counts) > 1:
            common, _ = counts.most_common(1)[0]
            odd = sorted((r for r in seen if key[r] != common),
                         key=lambda r: (seen[r].global_step, seen[r].eval_batch, r))
            r = odd[0]
            others = next(p for q, p in seen.items() if key[q] == common)
            return r, f"it is at {seen[r].where()}, the others at {others.where()}"
    feeding = [r for r in spoke if in_data_pipeline(answers[r].text)]
    if feeding and len(feeding) < len(spoke):
        r = feeding[0]
        return r, "it waits in its data pipeline; the others are not (in the collective)"
    return None, "every rank stopped at the same point"
