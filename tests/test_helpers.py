"""The shared test helpers (tests/helpers.py) that decide whether a test runs: need_tool() skips
a test here and fails it in CI, naming the Debian package, and every package it names is one
.ci/run installs; digests() reads the ranks' closing lines and checks each names its rank."""

import re

import pytest

from tests.helpers import APT_PACKAGES, REPO, digests, need_tool, unavailable

pytestmark = pytest.mark.unit

# Debian's Essential packages are on every system; .ci/run need not install them.
ESSENTIAL = {"libc-bin"}


def ci_packages() -> set[str]:
    """The packages .ci/run apt-installs (its apt_pkgs array)."""
    m = re.search(r"^apt_pkgs=\(([^)]*)\)", (REPO / ".ci" / "run").read_text(), re.M)
    assert m, ".ci/run lost its apt_pkgs=(...) line"
    return set(m.group(1).split())


def test_every_package_need_tool_names_is_one_ci_installs():
    assert set(APT_PACKAGES.values()) - ESSENTIAL - ci_packages() == set()


def test_need_tool_gives_the_path_of_a_tool_that_is_there(tmp_path):
    tool = tmp_path / "shellcheck"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert need_tool("shellcheck", "to lint", {"PATH": str(tmp_path)}) == str(tool)
    assert need_tool("shellcheck", "to lint", {"PATH": str(tmp_path), "CI": "true"}) == str(tool)


def test_need_tool_skips_without_the_tool_and_fails_in_ci(tmp_path):
    said = r"mpirun is not installed \(apt-get install -y openmpi-bin\), needed to launch"
    with pytest.raises(pytest.skip.Exception, match=said):
        need_tool("mpirun", "to launch", {"PATH": str(tmp_path)})
    with pytest.raises(pytest.skip.Exception, match=said):
        need_tool("mpirun", "to launch", {"PATH": str(tmp_path), "CI": "false"})
    with pytest.raises(pytest.fail.Exception, match=said + r".*CI=true: \.ci/run must provide"):
        need_tool("mpirun", "to launch", {"PATH": str(tmp_path), "CI": "true"})


def test_a_tool_without_a_package_is_a_mistake_in_the_test(tmp_path):
    with pytest.raises(KeyError, match="nosuchtool"):
        need_tool("nosuchtool", "for nothing", {"PATH": str(tmp_path)})


def test_unavailable_skips_here_and_fails_in_ci():
    with pytest.raises(pytest.skip.Exception, match=r"^no cluster$"):
        unavailable("no cluster", {})
    with pytest.raises(pytest.fail.Exception, match=r"^no cluster; CI=true"):
        unavailable("no cluster", {"CI": "true"})


def _worker_logs(tmp_path, *texts):
    (tmp_path / "logs").mkdir(parents=True)
    for rank, text in enumerate(texts):
        (tmp_path / "logs" / f"worker_{rank}.log").write_text(text)
    return tmp_path


def test_digests_are_read_per_rank_and_must_name_their_rank(tmp_path):
    line = "rank {}: final weights sha256 {}, batchnorm statistics sha256 {}\n"
    run = _worker_logs(tmp_path / "a", "Epoch 1/1\n" + line.format(0, "aa11", "bb22"),
                       line.format(1, "aa11", "bb22") + line.format(1, "ffff", "ffff"))
    assert digests(run) == {0: ("aa11", "bb22"), 1: ("aa11", "bb22")}   # the first line counts
    assert digests(run, 1) == {0: ("aa11", "bb22")}
    swapped = _worker_logs(tmp_path / "b", line.format(1, "aa", "bb"), line.format(0, "aa", "bb"))
    with pytest.raises(AssertionError, match=r"worker_0\.log states the digest of rank 1"):
        digests(swapped)
    none = _worker_logs(tmp_path / "c", "Epoch 1/1\n", line.format(1, "aa", "bb"))
    with pytest.raises(AssertionError, match=r"worker_0\.log has no final digest"):
        digests(none)
