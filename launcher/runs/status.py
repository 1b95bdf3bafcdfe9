"""`packrun status RUN_DIR`: what the run directory says (launcher/core/rundir/state.py), and
Slurm's view for a submitted run; then what it ran with (env.json,
launcher/core/rundir/envrecord.py)."""

from __future__ import annotations

from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir import envrecord, nodes
from launcher.core.rundir.names import JOB_JSON, SLURM_JOB_ID
from launcher.core.rundir.state import describe, read_run_state
from launcher.slurm.client import status


def status_command(run_dir: str | Path) -> str:
    """`packrun status RUN_DIR`: Slurm's view and the run's for a submitted run, the run's for
    a local one."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"run directory {run_dir} not found; pass the one packrun debug / run / "
                        "submit printed")
    if (path / SLURM_JOB_ID).exists():
        return "\n".join([status(path), *envrecord.summary(path)])
    rs = read_run_state(path)
    if rs is None:
        raise UserError(f"{path} is not a run directory (no {JOB_JSON}): pass the one packrun "
                        "debug / run / submit printed")
    return "\n".join(describe(rs) + node_lines(path, rs.state.is_going)
                     + envrecord.summary(path))


def node_lines(run_dir: Path, going: bool) -> list[str]:
    """A launch over ssh: one line per node, from the state its node program wrote
    (multinode/node<K>.json). A node that never wrote its end while the run is over went with its
    session (packrun killed, the host lost)."""
    lines = []
    for doc in nodes.read_nodes(run_dir):
        if not going and doc.get("state") in (nodes.STARTED, nodes.TRAINING):
            doc = doc | {"state": f"{doc['state']} when the launch ended (no word since)"}
        lines.append(f"  {nodes.describe(doc)}")
    return (["nodes:"] + lines) if lines else []
