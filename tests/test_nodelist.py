import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.errors import UserError
from launcher.nodelist import expand

REPO = Path(__file__).resolve().parents[1]


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
    ("gpu[1,3]x", ["gpu1x", "gpu3x"]),
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
    res = subprocess.run([sys.executable, "-m", "launcher.nodelist", "node[1-2],gpu7"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert res.stdout.splitlines() == ["node1", "node2", "gpu7"]
    bad = subprocess.run([sys.executable, "-m", "launcher.nodelist", "node[2-1]"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "runs backwards" in bad.stderr
