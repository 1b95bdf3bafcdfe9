"""README.md stays true: the job-file reference is generated from the spec, and the test command
it quotes is the one .ci/run runs. PACKRUN_UPDATE_README=1 rewrites the reference block (never
in CI, CI=true: there the test fails instead)."""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from launcher.core.spec import reference_markdown
from tests.helpers import REPO, need_tool, update_requested

pytestmark = pytest.mark.unit

BLOCK = re.compile(r"(<!-- reference:start[^\n]*-->\n)(.*?)(<!-- reference:end -->)", re.S)


def test_job_file_reference_matches_the_spec():
    readme = (REPO / "README.md").read_text()
    m = BLOCK.search(readme)
    assert m, "README.md lost its reference:start/end markers"
    if update_requested("PACKRUN_UPDATE_README"):  # never in CI: the test fails there
        readme = BLOCK.sub(lambda m: m.group(1) + reference_markdown() + m.group(3), readme)
        (REPO / "README.md").write_text(readme)
        m = BLOCK.search(readme)
    assert m.group(2) == reference_markdown(), \
        "README's job-file reference is stale: PACKRUN_UPDATE_README=1 pytest tests/test_readme.py"


def _opening_commands(readme: str) -> list[str]:
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in first_block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_readme_opens_with_demo_and_test_commands_and_ci_runs_the_quoted_test_command():
    readme = (REPO / "README.md").read_text()
    demo, tests = _opening_commands(readme)
    # 1: install into .venv (no pip into the PEP 668 system Python), then the demo from .venv
    assert demo == "bash install.sh && .venv/bin/packrun demo", demo
    # 2: CI's own entry point
    assert tests == "bash .ci/run", tests
    quoted = readme.split("the test command, which is", 1)[1].split("```bash\n", 1)[1]
    command = quoted.split("\n", 1)[0].strip()
    assert command.startswith(".venv/bin/python -m pytest"), command
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci, (command, ".ci/run must run it verbatim")
    # .ci/run installs the way command 1 does (plus the test extras), never with the system pip
    assert "bash install.sh --test" in ci
    assert not any("pip install" in line for line in ci if not line.startswith("#"))
    assert any("slurm_up.sh" in line for line in ci)


def test_install_script_makes_a_venv_from_the_system_python_and_never_pips_into_it():
    text = (REPO / "install.sh").read_text()
    code = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    assert any(line.startswith('python="${PYTHON:-/usr/bin/python3}"') for line in code)
    assert '"$python" -m venv .venv' in code
    assert "apt-get install -y -qq --no-install-recommends python3-venv >/dev/null" in code
    pips = [line for line in code if "pip install" in line]
    assert pips and all(line.startswith(".venv/bin/python -m pip") for line in pips), pips


def test_install_script_without_venv_support_and_not_root_says_what_to_do():
    """A Python that cannot make a venv (no python3-venv), as a non-root user: one clear
    message naming the package, nothing half-made."""
    if os.geteuid() == 0:
        need_tool("setpriv", "to run install.sh as a user other than root")
    with tempfile.TemporaryDirectory() as d:  # not under pytest's tmp_path: that is 0700
        os.chmod(d, 0o777)
        _install_without_venv_support(Path(d))


def _install_without_venv_support(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "install.sh", repo / "install.sh")
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexit 1\n")  # `import ensurepip, venv` fails (no python3-venv)
    fake.chmod(0o755)
    cmd = ["bash", str(repo / "install.sh")]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        tmp_path.chmod(0o777)
        repo.chmod(0o777)
    r = subprocess.run(cmd, env={**os.environ, "PYTHON": str(fake)}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r
    assert "python3-venv" in r.stderr and "root" in r.stderr, r.stderr
    assert not (repo / ".venv").exists()


def test_install_and_ci_scripts_pass_shellcheck():
    need_tool("shellcheck", "to lint install.sh and .ci/run")
    r = subprocess.run(["shellcheck", "-x", str(REPO / "install.sh"), str(REPO / ".ci" / "run")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_layout_table_names_every_module():
    readme = (REPO / "README.md").read_text()
    table = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in re.findall(r"^\| (`(?:launcher|src)/[^|]*)\|", table, re.M):
        folder = row.split("/", 1)[0].strip("`")
        listed |= {f"{folder}/{name}" for name in re.findall(r"`(?:\w+/)?(\w+\.py)`", row)}
    modules = {f"{p.parent.name}/{p.name}" for folder in ("launcher", "src")
               for p in (REPO / folder).glob("*.py") if p.name != "__init__.py"}
    assert sorted(modules - listed) == [], "README's layout table misses these modules"
    assert sorted(listed - modules) == [], "README's layout table names modules that do not exist"


def test_readme_tier_commands_name_the_registered_markers():
    """The markers setup.cfg registers, tests/conftest.py enforces and README's "Run the tests"
    commands select are one set; every tier has a command."""
    import configparser

    from tests.conftest import TIERS
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    registered = {line.split(":", 1)[0].strip()
                  for line in cfg["tool:pytest"]["markers"].strip().splitlines()}
    assert registered == set(TIERS)
    assert "--strict-markers" in cfg["tool:pytest"]["addopts"]
    section = (REPO / "README.md").read_text().split("**Run the tests.**", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert all(c.startswith(".venv/bin/python -m pytest -m ") for c in commands), commands
    selected = [re.search(r'pytest -m ("[^"]+"|\S+)', c).group(1).strip('"') for c in commands]
    named = {w for expr in selected for w in re.findall(r"\w+", expr)} - {"not", "and", "or"}
    assert named == registered, (named, registered)
