"""`packrun status` of a launch over ssh: one line per node, from the state each node program
wrote; a node that never wrote its end while the run is over is said to be stale."""

import sys

import pytest

from launcher.core.rundir import attempts, nodes
from launcher.core.rundir.state import Phase
from launcher.core.spec import load_job
from launcher.render.artifacts import write_run_dir
from launcher.runs.status import status_command
from tests.helpers import REPO

pytestmark = pytest.mark.unit


def test_status_lists_each_nodes_state(make_job):
    spec = load_job(make_job(nodes=2, hosts="a,b", master_port=8118))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=REPO)
    nodes.write_plan(run_dir, ["a", "b"], ["10.0.0.1", "10.0.0.2"], [], True)
    attempts.write_state(run_dir, kind="run", attempt=1, state=Phase.FAILED, started=1.0,
                         ended=2.0, exit_code=1)
    nodes.write_node(run_dir, 1, state=nodes.FAILED, host="b",
                     reason="rank 1 was killed by signal 9 (SIGKILL)")
    nodes.write_node(run_dir, 0, state=nodes.TRAINING, host="a")
    text = status_command(run_dir)
    assert "nodes:\n  node 0 (a): training when the launch ended (no word since)\n" \
        "  node 1 (b): failed: rank 1 was killed by signal 9 (SIGKILL)" in text, text
