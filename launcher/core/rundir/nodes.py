"""The nodes of a launch over ssh (`packrun run --nodes=N --hosts=...`): the plan the launching
packrun writes (RUN_DIR/multinode/plan.json: hosts as ssh reaches them, ssh options, each node's
address) and the state each node program writes for its node (RUN_DIR/multinode/node<K>.json), read
by the launching packrun, `packrun status` and `packrun logs`.

States of a node, in order: started (its node program runs the launch script), training (every
rank of the node has started), then one of finished, failed, stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.names import NODES_DIR, NODES_PLAN, node_state
from launcher.core.rundir.schema import read_json, stamped

STARTED, TRAINING, FINISHED, FAILED, STOPPED = "started", "training", "finished", "failed", \
    "stopped"
ENDED = (FINISHED, FAILED, STOPPED)


def write_plan(run_dir: Path, hosts: list[str], addresses: list[str], ssh: list[str],
               local: bool) -> None:
    """`local`: node 0 runs on the machine of the launching packrun (not over ssh)."""
    (Path(run_dir) / NODES_DIR).mkdir(exist_ok=True)
    write_atomic(Path(run_dir) / NODES_PLAN, json.dumps(stamped(dict(
        hosts=hosts, addresses=addresses, ssh=ssh, node0_local=local)), indent=1) + "\n")


def read_plan(run_dir: Path) -> dict | None:
    return read_json(Path(run_dir) / NODES_PLAN)


def write_node(run_dir: Path, node: int, **fields) -> dict:
    """Update node `node`'s state file with `fields` (state, host, pid, pgid, rank, ...)."""
    path = Path(run_dir) / node_state(node)
    doc = (read_json(path) or {}) | fields | {"node": node, "updated": time.time()}
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, json.dumps(stamped(doc), indent=1) + "\n")
    return doc


def read_node(run_dir: Path, node: int) -> dict | None:
    return read_json(Path(run_dir) / node_state(node))


def read_nodes(run_dir: Path) -> list[dict]:
    """Every node's state, by node rank (the nodes of the plan; none without a plan)."""
    plan = read_plan(run_dir)
    if not plan:
        return []
    out = []
    for k, host in enumerate(plan.get("hosts", [])):
        doc = read_node(run_dir, k) or {"node": k, "state": "not started"}
        out.append({"host": host} | doc)
    return out


def describe(doc: dict) -> str:
    """One line: "node 1 (node2): failed: rank 1 was killed by signal 9 (SIGKILL)"."""
    line = f"node {doc['node']} ({doc.get('host', '?')}): {doc.get('state', '?')}"
    if doc.get("reason") and doc.get("state") in (FAILED, STOPPED):
        line += f": {doc['reason']}"
    return line
