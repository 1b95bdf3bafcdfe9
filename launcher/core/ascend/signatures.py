"""The error lines that explain a failed Ascend launch, as CANN, HCCL and msrun print them, with
what each means in plain words and what to do next. The table is data: each entry is one
signature (a regex over one log line), ordered by how close it is to the cause: a card held by
another process or a wrong rank table is a cause; a timeout waiting for a peer is a symptom of
another rank's failure, so those come later, and msrun's own lines last.

Verbatim sources (docs/ascend.md): CANN/HCCL fault-diagnosis pages and user logs from public
issue threads (EI0002, EI0006, EJ0001, `Set visible device failed`), HCCL's rank-table parser
(EI0004), HCCP's ra_host.c line (EI0014), msrun's _api.py and meta_server_node.cc.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Signature:
    code: str          # CANN's error code, or a short name for lines without one
    pattern: str       # a regex searched in one line; named groups fill the texts below
    explanation: str   # str.format'ed with the groups (and `rank`: the rank whose log it is)
    next_step: str


# Ordered: the first signature found (in this order, over every log read) explains the failure.
SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "EJ0001",
        r"EJ0001: .*Failed to initialize the HCCP process\. Reason: Maybe the last training "
        r"process is running",
        "CANN could not start its communication process (HCCP) on {where}: the card is still "
        "held, most likely by a training process of an earlier run that has not exited.",
        "list what holds the cards with `npu-smi info` (the process table) or `packrun check` on "
        "that node, end those processes, wait 10 s, then start again"),
    Signature(
        "Set visible device failed",
        r"Set visible device failed, invalid device=(?P<device>\d+), input visible "
        r"devices:(?P<visible>[0-9,]*)",
        "{where} asked for device {device}, which is not among the visible devices "
        "({visible}): the device ids of the rank table / DEVICE_ID and the visible-device list "
        "(ASCEND_RT_VISIBLE_DEVICES, or Slurm's ASCEND_VISIBLE_DEVICES) disagree.",
        "make `devices` (or the rank table's device_id) name cards that are visible on that "
        "node; under Slurm's gres/npu let packrun take the allocated cards (leave devices "
        "\"\")"),
    Signature(
        "EI0014",
        r"the IP address\((?P<table_ip>[^)]*)\) in the ranktable is inconsistent with the IP "
        r"address\((?P<nic_ip>[^)]*)\) of the network adapter",
        "HCCL refused the rank table on {where}: it gives device IP {table_ip}, but the card's "
        "network adapter has {nic_ip}.",
        "compare the table with `hccn_tool -i <device> -ip -g` on that server and write the "
        "table again from the cards (`packrun rank-table`)"),
    Signature(
        "EI0004",
        r"(?:\[RanktableCheck\].*?(?P<check>\S+ is invalid)|EI0004: .*?(?P<reason>[^.]*\.)|"
        r"path (?P<path>\S+) is not a valid real path)",
        "HCCL could not load the rank table on {where} ({detail}).",
        "run `packrun check JOB` (it validates the table as HCCL does: version 1.0 for AI "
        "Server mode, 1.2 with super_device_id and super_pod_list for Atlas A3 super pods) and "
        "fix the field it names"),
    Signature(
        "EI0002",
        r"EI0002: .*The Notify register has not received the Notify record from remote rank: "
        r"\[(?P<remote>\d+)\]",
        "{who} waited in a collective operation for rank {remote}, which did not take part "
        "within HCCL_EXEC_TIMEOUT (the job's collective_timeout): rank {remote} failed, hung, "
        "or was much slower (evaluation, checkpointing, an uneven number of samples).",
        "read rank {remote}'s log (logs/worker_{remote}.log) for an earlier error; if it was only "
        "slow, raise collective_timeout; if every rank reports this, check the links with "
        "`hccn_tool -i <device> -link -g`"),
    Signature(
        "EI0006",
        r"EI0006: .*Getting socket times out\. Reason: Remote Rank did not send the data in time",
        "{who} timed out setting up a connection to a peer rank (HCCL_CONNECT_TIMEOUT, from the "
        "job's cluster_timeout): the peer was not there in time: it failed earlier, started "
        "late, or the device network between them is down.",
        "look for the first error in the other ranks' logs; check each card's link with "
        "`hccn_tool -i <device> -link -g` and `-net_health -g`; if nodes start far apart, raise "
        "cluster_timeout"),
    Signature(
        "msrun timeout",
        r"worker (?P<remote>\d+) is the first one timed out, please check its log",
        "msrun's scheduler stopped hearing from worker {remote} first (it died or hung), and "
        "ended the job.",
        "read worker {remote}'s log (logs/worker_{remote}.log)"),
    Signature(
        "msrun timeout",
        r"Time out nodes are \['(?P<remote>\d+)'",
        "msrun's scheduler stopped hearing from worker {remote} first (it died or hung), and "
        "ended the job.",
        "read worker {remote}'s log (logs/worker_{remote}.log)"),
    Signature(
        "msrun worker exit",
        r"Worker process (?P<pid>\d+) exit with exception\. Error code: (?P<code>-?\d+)",
        "msrun saw worker process {pid} exit with error code {code} and stopped the other "
        "workers.",
        "the first failing rank's log has the cause (packrun names it above)"),
)

_COMPILED = [(s, re.compile(s.pattern)) for s in SIGNATURES]
# The rank a CANN error line reports itself as: "(PID:2969, Device:0, RankID:101)".
_RANK_ID = re.compile(r"RankID:(\d+)")


@dataclass(frozen=True)
class Match:
    signature: Signature
    line: str          # the log line, verbatim (stripped)
    source: str        # the file it was read from
    rank: int | None   # the rank whose log it is
    explanation: str
    next_step: str

    def to_dict(self) -> dict:
        return dict(code=self.signature.code, line=self.line[:500], file=self.source,
                    rank=self.rank, explanation=self.explanation, next_step=self.next_step)


def _fill(sig: Signature, m: re.Match, rank: int | None, reported: int | None) -> tuple[str, str]:
    groups = {k: v for k, v in m.groupdict().items() if v is not None}
    r = reported if reported is not None else rank
    who = f"rank {r}" if r is not None else "a rank"
    where = f"rank {r}" if r is not None else "one rank"
    detail = groups.get("check") or groups.get("reason") or (
        f"path {groups['path']} is not a valid real path" if "path" in groups else "")
    values = {"who": who, "where": where, "detail": detail.strip().rstrip(".")} | groups
    return sig.explanation.format(**values), sig.next_step.format(**values)


def find(texts: Iterable[tuple[str, int | None, str]]) -> Match | None:
    """The best explanation in `texts`: (source name, rank or None, text) in the order they
    should be believed (the failing rank's first). The earliest signature of the table wins;
    among equal signatures, the earliest text."""
    best: tuple[int, int, Match] | None = None
    for t, (source, rank, text) in enumerate(texts):
        reported = None
        for line in text.splitlines():
            rid = _RANK_ID.search(line)
            if rid:
                reported = int(rid.group(1))
            for i, (sig, rx) in enumerate(_COMPILED):
                if best is not None and (i, t) >= best[:2]:
                    break
                m = rx.search(line)
                if m:
                    explanation, step = _fill(sig, m, rank, reported)
                    best = (i, t, Match(sig, line.strip(), source, rank, explanation, step))
                    break
    return best[2] if best else None
