"""The decisions of a launch over ssh, as data in and data out (launcher/multinode/run.py acts
on them): which node failed, and how the attempt ended.

Nodes end one by one. A node that ends with status 0 finished its share; the first node that
ends otherwise, while packrun has not begun stopping the others, failed the attempt: every other
node is stopped and the attempt's result names that node, its host and its failing rank (from
the node's state file, launcher/core/rundir/nodes.py). A node whose session ended without the
node program saying how (ssh exit status 255, no final state) lost its connection: the host is
down or unreachable, and that counts as that node failing.
"""

from __future__ import annotations

from dataclasses import dataclass

from launcher.core.rundir import nodes
from launcher.core.rundir.attempts import Result
from launcher.core.rundir.names import EXIT_REQUEUE
from launcher.multinode.ssh import SSH_FAILED


@dataclass
class Ended:
    """A node's end as the launching packrun saw it: the exit status of its session (ssh's, or
    the local node program's) and the state the node program last wrote."""
    node: int
    host: str
    code: int
    state: dict | None = None


def failed(ended: Ended) -> bool:
    return ended.code not in (0, EXIT_REQUEUE)


def culprit(ends: list[Ended]) -> Ended | None:
    """The node that failed the attempt: the first (in order of ending) that failed."""
    return next((e for e in ends if failed(e)), None)


def all_finished(ends: list[Ended], n_nodes: int) -> bool:
    return len(ends) == n_nodes and not any(failed(e) for e in ends)


def lost(e: Ended) -> bool:
    """The session ended without the node program's last word: connection or host lost."""
    state = (e.state or {}).get("state")
    return state not in nodes.ENDED


def result(ends: list[Ended], n_nodes: int) -> Result:
    """The attempt's result once every node has ended (the culprit first among `ends`)."""
    bad = culprit(ends)
    if bad is None:
        if ends and all(e.code == EXIT_REQUEUE for e in ends):
            return Result(EXIT_REQUEUE, reason="stopped on request; start again to resume")
        return Result(0)
    where = f"node {bad.node} ({bad.host})"
    doc = bad.state or {}
    if lost(bad):
        how = "its ssh session ended" if bad.code == SSH_FAILED else \
            f"its node program ended with status {bad.code}"
        return Result(bad.code, reason=f"{where}: {how} without a report (host down or "
                                       "connection lost?)", host=bad.host, node=bad.node)
    rank = doc.get("rank")
    return Result(bad.code, rank if isinstance(rank, int) else None, doc.get("signal"),
                  doc.get("exit_code"), f"{where}: {doc.get('reason') or 'failed'}",
                  host=bad.host, node=bad.node, stall=doc.get("stall"))
