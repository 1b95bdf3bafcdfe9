"""The preflight of a launch over ssh judges every node's answer (launcher/multinode/probe.py):
each problem is one line naming the host and the fix. The answers come from the real probe
where a machine can give them (this one), else are written out."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.core.errors import UserError
from launcher.multinode import preflight
from launcher.multinode.probe import Answer
from launcher.multinode.ssh import SshOptions
from tests.helpers import REPO

pytestmark = pytest.mark.unit

OUT = Path("/shared/runs")


def answer(node, host, addresses, token=True, master="10.0.0.1", port=8118, free=True,
           self_="", ssh=""):
    return Answer(node, host, host, addresses, token, master, port, free, self_, ssh)


def two(**second) -> list[Answer]:
    return [answer(0, "a", ["10.0.0.1"], self_="10.0.0.1"),
            answer(1, "b", ["10.0.0.2"], ssh="10.0.0.2", **second)]


def judged(answers, master="a", given=False, port=0):
    return preflight.judge(answers, OUT, master, given, port)


def test_good_answers_give_each_nodes_address_the_master_and_node_0s_port():
    assert judged(two()) == (["10.0.0.1", "10.0.0.2"], "10.0.0.1", 8118)
    assert judged(two(), "10.0.0.1", True, 9000) == (["10.0.0.1", "10.0.0.2"], "10.0.0.1", 9000)


@pytest.mark.parametrize("second, master, given, port, said", [
    (dict(token=False), "a", False, 0,
     "b: /shared/runs is not visible there at the same path"),
    (dict(master="127.0.1.1"), "a", True, 0,
     "b: master_addr 'a' resolves to 127.0.1.1 there, a loopback address"),
    (dict(master="10.0.0.9"), "a", True, 0,
     ("b: master_addr 'a' resolves to 10.0.0.9 there, which is not an address of node 0 (a: "
      "10.0.0.1)")),
    (dict(master=""), "a", True, 0, "b: master_addr 'a' does not resolve there"),
])
def test_each_problem_is_one_line_naming_the_host(second, master, given, port, said):
    with pytest.raises(UserError) as e:
        judged(two(**second), master, given, port)
    assert str(e.value).startswith(said) and "\n" not in str(e.value)


def test_two_hosts_with_an_address_in_common_are_one_machine():
    answers = [answer(0, "a", ["10.0.0.1"]), answer(1, "a2", ["10.0.0.1", "10.1.0.1"])]
    with pytest.raises(UserError, match=r"^a and a2 are the same machine \(both have address "
                                        r"10\.0\.0\.1\); list each machine once"):
        judged(answers)


def test_a_busy_master_port_on_node_0_is_named():
    answers = [answer(0, "a", ["10.0.0.1"], free=False), answer(1, "b", ["10.0.0.2"])]
    with pytest.raises(UserError, match=r"^a: the master port 8118 is busy there"):
        judged(answers, port=8118)


def test_a_node_knows_its_address_by_its_name_its_ssh_session_or_its_only_address():
    assert answer(0, "a", ["10.0.0.1", "10.1.0.1"], self_="10.1.0.1").address() == "10.1.0.1"
    assert answer(0, "a", ["10.0.0.1", "10.1.0.1"], ssh="10.0.0.1").address() == "10.0.0.1"
    assert answer(0, "a", ["10.0.0.1"], self_="127.0.1.1").address() == "10.0.0.1"
    many = [answer(0, "a", ["10.0.0.1"]), answer(1, "b", ["10.0.0.2", "10.1.0.2"])]
    with pytest.raises(UserError, match=r"^b: cannot tell its address"):
        judged(many)


def test_the_real_probe_answers_for_this_machine(tmp_path):
    token = tmp_path / "token"
    token.write_text("abc\n")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "launcher.node", "probe", str(token), "abc",
                            "localhost", str(port), "localhost"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    got = Answer.parse(0, "here", r.stdout)
    assert got is not None and got.token and got.master == "127.0.0.1" and not got.port_free
    assert got.hostname == socket.gethostname()
    assert json.loads(r.stdout)["port"] == port


def test_this_machine_is_local_and_a_documentation_address_is_not():
    assert preflight.is_local("localhost", SshOptions())
    assert not preflight.is_local("192.0.2.1", SshOptions())
