"""Which node failed a launch over ssh, and what the attempt's result says (failure.json names
the node, its host and its failing rank)."""

import pytest

from launcher.core.rundir import nodes
from launcher.multinode import policy
from launcher.multinode.policy import Ended

pytestmark = pytest.mark.unit

KILLED = {"state": nodes.FAILED, "rank": 1, "signal": 9, "exit_code": None,
          "reason": "rank 1 was killed by signal 9 (SIGKILL)"}
STOPPED = {"state": nodes.STOPPED, "reason": "its session ended"}


def test_the_first_node_to_fail_is_the_culprit_not_the_ones_stopped_after_it():
    ends = [Ended(0, "a", 0, {"state": nodes.FINISHED}), Ended(1, "b", 1, KILLED),
            Ended(2, "c", 143, STOPPED)]
    assert policy.culprit(ends).node == 1
    r = policy.result(ends, 3)
    assert (r.code, r.rank, r.signal, r.exit_code, r.host, r.node) == (1, 1, 9, None, "b", 1)
    assert r.reason == "node 1 (b): rank 1 was killed by signal 9 (SIGKILL)"
    assert not r.user_stop


def test_nodes_that_finish_early_fail_nothing():
    ends = [Ended(1, "b", 0, {"state": nodes.FINISHED})]
    assert policy.culprit(ends) is None and not policy.all_finished(ends, 2)
    ends.append(Ended(0, "a", 0, {"state": nodes.FINISHED}))
    assert policy.all_finished(ends, 2) and policy.result(ends, 2).code == 0


def test_a_session_that_ends_without_the_node_programs_word_is_a_lost_node():
    ends = [Ended(1, "b", 255, {"state": nodes.TRAINING})]
    assert policy.lost(ends[0])
    r = policy.result(ends, 2)
    assert (r.code, r.rank, r.host, r.node) == (255, None, "b", 1)
    assert "node 1 (b): its ssh session ended without a report" in r.reason
    assert policy.lost(Ended(1, "b", 255, None))
    assert not policy.lost(Ended(1, "b", 1, KILLED))


def test_every_node_stopped_on_request_is_a_requeue():
    ends = [Ended(0, "a", 75, STOPPED), Ended(1, "b", 75, STOPPED)]
    assert policy.result(ends, 2).code == 75


def test_a_stalled_node_carries_the_stall_into_the_attempts_result():
    stall = {"rank": 3, "bound": "stall_timeout", "per_rank": []}
    stalled = {"state": nodes.FAILED, "rank": 3, "signal": None, "exit_code": None,
               "reason": "no rank made progress for 601 s (stall_timeout 600 s)", "stall": stall}
    r = policy.result([Ended(1, "b", 124, stalled), Ended(0, "a", 143, STOPPED)], 2)
    assert (r.code, r.rank, r.node, r.stall) == (124, 3, 1, stall)
    assert policy.result([Ended(1, "b", 1, KILLED)], 2).stall is None
