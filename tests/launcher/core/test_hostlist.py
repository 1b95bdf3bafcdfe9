"""Slurm host lists (launcher/core/hostlist.py): `expand` gives the hosts in Slurm's order, as
`scontrol show hostnames` does, and refuses what Slurm refuses, naming the culprit."""

import os
import re
import subprocess
import sys

import pytest

from launcher.core.errors import UserError
from launcher.core.hostlist import expand
from tests.helpers import REPO, need_tool

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("expr, hosts", [
    ("node01", ["node01"]),
    ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("a1,b[2-3]", ["a1", "b2", "b3"]),
    ("node[8-10]", ["node8", "node9", "node10"]),          # no padding from a 1-digit start
    ("x[098-101]", ["x098", "x099", "x100", "x101"]),       # padding from the first number
    ("n[1-02]", ["n1", "n2"]),
    ("10.0.0.[1-2]", ["10.0.0.1", "10.0.0.2"]),
    ("a,,b", ["a", "b"]),                                   # as scontrol: empty entries vanish
])
def test_expand_matches_scontrol(expr, hosts):
    assert expand(expr) == hosts


@pytest.mark.parametrize("expr, message", [
    ("n[1-3", "'[' is never closed"),
    ("n]", "']' without '['"),
    ("n[3-1]", "range 3-1 runs backwards"),
    ("n[]", "a bracket holds numbers"),
    ("n[a-b]", "a bracket holds numbers"),
    ("n[[1]]", "nested '['"),
    ("a, b", "whitespace"),
    ("", "names no host"),
    (",", "names no host"),
])
def test_bad_hostlists_name_the_expression(expr, message):
    with pytest.raises(UserError, match=re.escape(message)) as e:
        expand(expr)
    assert repr(expr) in str(e.value)


def test_module_prints_one_host_per_line():
    """The Slurm script's fallback when scontrol is missing."""
    res = subprocess.run([sys.executable, "-m", "launcher.node", "hostnames", "node[1-2],gpu7"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert res.stdout.splitlines() == ["node1", "node2", "gpu7"]
    bad = subprocess.run([sys.executable, "-m", "launcher.node", "hostnames", "node[2-1]"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "runs backwards" in bad.stderr


# --- the same as Slurm's own expansion ----------------------------------------------------------

SLURM_CASES = ["a[1-2]b[1-2]c[1-2]", "a[1-2]b[1-2]c[1-2]d[1-2]", "x[1-3]y[0-1]z[5,7]w[1-2]",
               "r[1-2]-n[01-02]", "n[2,1]", "n[1-3],n2", "n[01-3]", "a,b,,c", "[1-2]", "plain",
               "n[08-10]", "10.0.0.[1-2]"]


@pytest.fixture(scope="module")
def scontrol_env(tmp_path_factory) -> dict[str, str]:
    """An environment in which `scontrol show hostnames` runs: scontrol reads a slurm.conf
    before anything else, and for hostnames a cluster name and a controller are enough; no
    daemon answers. So the test needs scontrol (slurm-client, which CI installs), not the
    slurm.conf of a running cluster, which only a machine that started one has (CI's .ci/run
    does; a developer's `-m unit` run may not)."""
    need_tool("scontrol", "to compare the expansion with Slurm's own")
    conf = tmp_path_factory.mktemp("slurm") / "slurm.conf"
    conf.write_text("ClusterName=hostlist\nSlurmctldHost=localhost\n")
    return os.environ | {"SLURM_CONF": str(conf)}


@pytest.mark.parametrize("expr", SLURM_CASES)
def test_expansion_matches_scontrol(expr, scontrol_env):
    r = subprocess.run(["scontrol", "show", "hostnames", expr], capture_output=True, text=True,
                       env=scontrol_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert expand(expr) == r.stdout.split()


def test_three_bracket_groups_in_slurms_order():
    # held without scontrol too: the last bracket fastest, then the first, then the second
    assert expand("a[1-2]b[1-2]c[1-2]")[:5] == ["a1b1c1", "a1b1c2", "a2b1c1", "a2b1c2", "a1b2c1"]


@pytest.mark.parametrize("expr, message", [
    ("n[1-2]x", "'x' after the last ']'; Slurm rejects text after a bracket"),
    ("n[1-1000000]", "names 1000000 hosts; Slurm takes at most 65536"),
    ("gpu[1,3]x", "'x' after the last ']'"),
    ("a[0-999]b[0-999]c[0-999999999]", "Slurm takes at most 65536"),
])
def test_rejected_like_slurm(expr, message):
    with pytest.raises(UserError, match=re.escape(message)):
        expand(expr)
