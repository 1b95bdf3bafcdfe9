"""README.md and docs/ stay true.

README is the front page (what packrun is, the two commands for a fresh machine, a five-minute
tour, links); docs/ holds one page per topic. These tests hold both to the code:

- the job-file reference in docs/job-file.md is generated from the spec
  (PACKRUN_UPDATE_DOCS=1 rewrites it; PACKRUN_UPDATE_README=1, the old name, works too);
- README opens with the two commands, and the test command it quotes is the one .ci/run runs;
  install.sh and .ci/run install the way README says, and pass shellcheck, as does every shell
  script the docs show;
- docs/architecture.md names every module of launcher/ and src/ and no module that does not
  exist, every package in its layer diagram, and every name of the run-directory protocol;
- every path the pages name exists, every link resolves (anchors too), README links every page
  and stays short;
- every `packrun` command shown (in bash blocks and inline code) is a real command with real
  flags, and README's command table names every command; every benchmark flag shown is one
  the benchmark declares;
- docs/testing.md's tier commands select exactly the registered markers.
"""

import inspect
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from launcher.core.spec import JobSpec, reference_markdown
from tests.helpers import REPO, need_tool, update_requested

pytestmark = pytest.mark.unit

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MAX_README_LINES = 250

BLOCK = re.compile(r"(<!-- reference:start[^\n]*-->\n)(.*?)(<!-- reference:end -->)", re.S)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _text(path: Path) -> str:
    return path.read_text()


def _all_pages() -> list[Path]:
    return [README, *PAGES]


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def _section(text: str, heading: str) -> str:
    """The body of `## heading` up to the next heading of level 2 or above."""
    body = text.split(f"\n## {heading}\n", 1)[1]
    return re.split(r"^#{1,2} ", body, maxsplit=1, flags=re.M)[0]


# --- the job-file reference -------------------------------------------------------------------

def test_job_file_reference_matches_the_spec():
    page = DOCS / "job-file.md"
    text = _text(page)
    m = BLOCK.search(text)
    assert m, "docs/job-file.md lost its reference:start/end markers"
    if update_requested("PACKRUN_UPDATE_DOCS") or update_requested("PACKRUN_UPDATE_README"):
        text = BLOCK.sub(lambda m: m.group(1) + reference_markdown() + m.group(3), text)
        page.write_text(text)
        m = BLOCK.search(text)
    assert m.group(2) == reference_markdown(), \
        "docs/job-file.md's reference is stale: PACKRUN_UPDATE_DOCS=1 pytest tests/test_docs.py"


# --- README's opening commands, the test command, install.sh and .ci/run ----------------------

def _opening_commands(readme: str) -> list[str]:
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in first_block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _ci_lines() -> list[str]:
    return [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]


def test_readme_opens_with_demo_and_test_commands_and_ci_runs_the_quoted_test_command():
    readme = _text(README)
    demo, tests = _opening_commands(readme)
    # 1: install into .venv (no pip into the PEP 668 system Python), then the demo from .venv
    assert demo == "bash install.sh && .venv/bin/packrun demo", demo
    # 2: CI's own entry point
    assert tests == "bash .ci/run", tests
    quoted = readme.split("the test command, which is", 1)[1].split("```bash\n", 1)[1]
    command = quoted.split("\n", 1)[0].strip()
    assert command.startswith(".venv/bin/python -m pytest"), command
    ci = _ci_lines()
    assert command in ci, (command, ".ci/run must run it verbatim")
    # .ci/run installs the way command 1 does (plus the test extras), never with the system pip
    assert "bash install.sh --test" in ci
    assert not any("pip install" in line for line in ci if not line.startswith("#"))
    assert any("slurm_up.sh" in line for line in ci)


def test_testing_page_quotes_the_test_command_ci_runs():
    section = _section(_text(DOCS / "testing.md"), "What CI runs")
    command = section.split("```bash\n", 1)[1].split("\n", 1)[0].strip()
    readme = _text(README).split("the test command, which is", 1)[1].split("```bash\n", 1)[1]
    assert command == readme.split("\n", 1)[0].strip()
    assert command in _ci_lines()


def test_install_script_makes_a_venv_from_the_system_python_and_never_pips_into_it():
    text = (REPO / "install.sh").read_text()
    code = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    assert any(line.startswith('python="${PYTHON:-/usr/bin/python3}"') for line in code)
    assert '"$python" -m venv .venv' in code
    assert "apt-get install -y -qq --no-install-recommends python3-venv >/dev/null" in code
    # (with uv, which pip puts into .venv, or with pip: both into .venv)
    pips = [re.sub(r"^(el)?if ! ", "", line) for line in code if "pip install" in line]
    assert pips and all(line.startswith((".venv/bin/python -m pip", ".venv/bin/uv pip"))
                        for line in pips), pips
    assert any(line.startswith(".venv/bin/uv pip install") and "--python .venv/bin/python" in line
               for line in pips), pips


# A stand-in for .venv/bin/python in a copy of install.sh's folder: records each call in
# calls.log, prints $PIP_CONFIG for `pip config list`, and makes a uv stand-in (recording, exiting
# $UV_EXIT) when pip installs uv.
FAKE_VENV_PYTHON = """#!/bin/bash
here="$(cd "$(dirname "$0")" && pwd)"
echo "python $*" >> "$here/../../calls.log"
case "$*" in
  "-m pip config list") printf '%s\\n' "${PIP_CONFIG:-}";;
  *"pip install"*uv==*) printf '#!/bin/bash\\necho "uv $*" >> "%s"\\nexit "${UV_EXIT:-0}"\\n' \\
      "$here/../../calls.log" > "$here/uv"; chmod +x "$here/uv";;
esac
exit 0
"""


@pytest.mark.parametrize("case, env, installs", [
    ("default", {}, ["python -m pip install -q --disable-pip-version-check uv==0.13.10",
                     "uv pip install -q --python .venv/bin/python --compile-bytecode -e .[test]"]),
    ("a mirror in pip.conf", {"PIP_CONFIG": "global.index-url='https://mirror/simple'"},
     ["python -m pip install -q --disable-pip-version-check -e .[test]"]),
    ("an extra index only", {"PIP_CONFIG": "global.extra-index-url='https://x/simple'"},
     ["python -m pip install -q --disable-pip-version-check uv==0.13.10",
      "uv pip install -q --python .venv/bin/python --compile-bytecode -e .[test]"]),
    ("uv fails", {"UV_EXIT": "1"},
     ["python -m pip install -q --disable-pip-version-check uv==0.13.10",
      "uv pip install -q --python .venv/bin/python --compile-bytecode -e .[test]",
      "python -m pip install -q --disable-pip-version-check -e .[test]"]),
    ("asked for pip", {"PACKRUN_INSTALLER": "pip"},
     ["python -m pip install -q --disable-pip-version-check -e .[test]"]),
])
def test_install_script_installs_with_uv_and_falls_back_to_pip(tmp_path, case, env, installs):
    """uv (fast) into .venv by default; pip where pip has an index of its own (uv reads no
    pip.conf), when asked, and when uv fails: the install goes on and says why."""
    shutil.copy(REPO / "install.sh", tmp_path / "install.sh")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text(FAKE_VENV_PYTHON)
    (tmp_path / ".venv" / "bin" / "python").chmod(0o755)
    r = subprocess.run(["bash", "install.sh", "--test"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PATH": os.environ["PATH"],
                                                   **env})
    assert r.returncode == 0, (case, r.stdout, r.stderr)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c for c in calls if "install" in c and "compileall" not in c] == installs, (case, calls)
    used = "uv" if installs[-1].startswith("uv") else "pip"
    assert f"== {used}" in r.stdout, (case, r.stdout)
    if case in ("a mirror in pip.conf", "uv fails"):
        assert "pip (" in r.stdout, (case, r.stdout)  # says why pip


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


def _shown_scripts() -> list[tuple[str, str]]:
    """(page, text) of every shell script the pages show whole (a bash block with a #!)."""
    return [(_name(p), body) for p in _all_pages() for lang, body in FENCE.findall(_text(p))
            if lang in ("bash", "sh") and body.startswith("#!")]


def test_shown_shell_scripts_pass_shellcheck(tmp_path):
    need_tool("shellcheck", "to lint the scripts the docs show")
    scripts = _shown_scripts()
    assert scripts, "docs/slurm.md shows an sbatch script that runs packrun node-launch"
    for i, (page, body) in enumerate(scripts):
        path = tmp_path / f"shown_{i}.sh"
        path.write_text(body)
        # SC1091: the site file a script sources (CANN's set_env.sh) is not on this machine
        r = subprocess.run(["shellcheck", "-e", "SC1091", str(path)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, (page, r.stdout + r.stderr)


# --- docs/architecture.md: every module, every package, every run-directory name --------------

ARCHITECTURE = DOCS / "architecture.md"
# Modules the architecture names before they exist: each is marked "(being written" on the page.
# Once one exists, drop it here and its note there (the test says so).
BEING_WRITTEN: set[str] = set()  # none now: launcher/node/batch.py landed


def _modules() -> set[str]:
    """Every module of launcher/ and src/, as a path from the repository root; package
    __init__.py and __main__.py files are left out (the packages are in the diagram)."""
    return {str(p.relative_to(REPO)) for folder in ("launcher", "src")
            for p in (REPO / folder).rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}


def test_architecture_names_every_module_and_no_module_that_does_not_exist():
    text = _text(ARCHITECTURE)
    table = _section(text, "Modules")
    listed = set(re.findall(r"`((?:launcher|src)/[\w/]+\.py)`", table))
    modules = _modules()
    assert sorted(modules - listed) == [], "docs/architecture.md's module table misses these"
    named = set(re.findall(r"`((?:launcher|src)/[\w/]+\.py)`", text))
    assert sorted(named - modules - BEING_WRITTEN) == [], \
        "docs/architecture.md names modules that do not exist"
    for planned in sorted(BEING_WRITTEN):
        assert planned not in modules, \
            f"{planned} exists now: drop it from BEING_WRITTEN and its '(being written' note"
        assert re.search(re.escape(f"`{planned}` (being written"), text), planned


def test_architecture_diagram_names_every_package():
    text = _text(ARCHITECTURE)
    diagram = _section(text, "Layers").split("```\n", 1)[1].split("```", 1)[0]
    words = set(re.findall(r"[\w.]+", diagram))
    packages = {p.parent.relative_to(REPO) for folder in ("launcher", "src")
                for p in (REPO / folder).rglob("__init__.py")} - {Path("launcher"), Path("src")}
    assert packages
    missing = sorted(str(p) for p in packages if p.name not in words)
    assert missing == [], "docs/architecture.md's layer diagram misses these packages"
    # and each module of a package, by its name, in the diagram
    stems = {Path(m).stem for m in _modules() if Path(m).parent != Path("launcher")}
    assert sorted(stems - words - {"train"}) == [], "the diagram misses these modules"
    assert "train.py" in diagram


def _protocol_names() -> set[str]:
    """Every file name, exit status and variable of launcher/core/rundir/names.py, as text."""
    import launcher.core.rundir.names as names
    out = set()
    for key, value in vars(names).items():
        if key.startswith("_") or not key.isupper():
            continue
        if isinstance(value, str):
            out.add(value)
        elif isinstance(value, int):
            out.add(f"`{value}`")
        elif isinstance(value, dict):
            out |= set(value.values())
    placeholders = {"rank": "<rank>", "node_rank": "<N>", "attempt": "<k>"}
    for key, fn in vars(names).items():
        if key.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != names.__name__:
            continue
        params = list(inspect.signature(fn).parameters)
        if len(params) == 1 and params[0] in placeholders and key != "read_exit_status":
            out.add(fn(placeholders[params[0]]))
    return out


def test_architecture_describes_every_name_of_the_run_directory_protocol():
    section = _section(_text(ARCHITECTURE), "The run directory")
    names = _protocol_names()
    assert {"job.json", "run.lock", "run.node<N>.lock", "logs/worker_<rank>.exit", "`75`"} <= names
    missing = sorted(n for n in names if n not in section)
    assert missing == [], "docs/architecture.md's run-directory section misses these names"


# --- paths, links, README's length ------------------------------------------------------------

# Files the reader makes: the tour's `cp jobs/canidae_finetune.toml jobs/mine.toml`.
MADE_BY_THE_READER = {"jobs/mine.toml"}
PATH = re.compile(r"(?<![\w./-])((?:launcher|src|tests|benchmarks|templates|jobs|docs|\.ci)/"
                  r"[\w./-]*[\w/])")


def test_every_path_the_pages_name_exists():
    missing = []
    for page in _all_pages():
        for path in set(PATH.findall(_text(page))):
            if "<" in path or path.rstrip("/") in BEING_WRITTEN | MADE_BY_THE_READER:
                continue
            if not (REPO / path.rstrip("/")).exists():
                missing.append(f"{_name(page)}: {path}")
    assert sorted(missing) == [], "these paths do not exist"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", _prose(_text(path)), re.M)}


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", _prose(_text(path)))


def test_every_link_resolves():
    broken = []
    for page in _all_pages():
        for link in _links(page):
            if re.match(r"[a-z]+:", link):
                continue
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            if not path.exists():
                broken.append(f"{_name(page)}: {link} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{_name(page)}: {link} (no such heading)")
    assert broken == []


def test_readme_links_every_page_and_every_page_links_back():
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in _links(README)}
    assert PAGES and sorted(_name(p) for p in PAGES if p.resolve() not in linked) == []
    for page in PAGES:
        assert any(link.startswith("../README.md") for link in _links(page)), _name(page)


def test_readme_is_a_front_page():
    lines = _text(README).count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


# --- every packrun command shown is a real command with real flags ----------------------------

GLOBAL_FLAGS = {"help", "quiet", "verbose"}


def _commands():
    from launcher.cli.help import commands
    from launcher.cli.main import Commands
    return commands(Commands)


def _shown_packrun_commands() -> list[tuple[str, str]]:
    """(page, command line) of every packrun invocation in a bash block or inline code."""
    shown = []
    for page in _all_pages():
        text = _text(page)
        for lang, body in FENCE.findall(text):
            if lang not in ("bash", "sh"):
                continue
            for line in body.replace("\\\n", " ").splitlines():
                shown.append((_name(page), line))
        for span in re.findall(r"`([^`]+)`", _prose(text)):
            if re.search(r"(^|[\s/])packrun\s", span):
                shown.append((_name(page), " ".join(span.split())))
    return shown


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an inline span that quotes only part of a command
        return line.split("#", 1)[0].split()


def _invocations(line: str):
    """(command, flags) for each `packrun COMMAND ...` in a shell line (also after &&, |, ;)."""
    segment: list[str] = []
    for word in [*_words(line), ";"]:
        if word in ("&&", "||", "|", ";") or word.endswith(";"):
            found = [i for i, w in enumerate(segment) if w == "packrun" or w.endswith("/packrun")]
            if found and found[0] + 1 < len(segment):
                rest = segment[found[0] + 1:]
                yield rest[0], [w for w in rest[1:] if w.startswith("-")]
            segment = []
        else:
            segment.append(word)


def test_every_packrun_command_shown_is_real_and_takes_the_flags_shown():
    commands = _commands()
    keys = set(JobSpec.fields())
    wrong, seen = [], set()
    for page, line in _shown_packrun_commands():
        for name, flags in _invocations(line):
            name = name.split("|", 1)[0]  # `packrun debug|run --resume ...`: both commands
            if name in ("COMMAND", "--help", "-h"):
                continue
            if name not in commands:
                wrong.append(f"{page}: {line!r}: no command {name!r}")
                continue
            seen.add(name)
            params = inspect.signature(inspect.unwrap(commands[name])).parameters
            takes = {p for p in params if p != "self"}
            if any(p.kind is p.VAR_KEYWORD for p in params.values()):
                takes |= keys
            for f in flags:
                flag = f.lstrip("-").split("=", 1)[0]
                if f in ("-h", "-q", "-v") or flag in GLOBAL_FLAGS:
                    continue
                if flag not in takes:
                    wrong.append(f"{page}: {line!r}: packrun {name} takes no --{flag}")
    assert wrong == []
    assert {"demo", "debug", "run", "submit", "check", "render", "sweep"} <= seen


def test_readme_command_table_names_every_command():
    table = _section(_text(README), "Commands")
    named = set(re.findall(r"`packrun ([\w-]+)", table))
    assert sorted(set(_commands()) - named) == [], "README's command table misses these"


def test_every_benchmark_flag_shown_is_one_the_benchmark_declares():
    shown = []
    for page in _all_pages():
        text = _text(page)
        for span in [*re.findall(r"`([^`]+)`", _prose(text)),
                     *(body for lang, body in FENCE.findall(text) if lang in ("bash", "sh"))]:
            for script, args in re.findall(r"\b(bench_\w+\.py)((?:\s+--[\w-]+(?:[= ]\S+)?)*)",
                                           " ".join(span.split())):
                path = REPO / "benchmarks" / script
                assert path.is_file(), (_name(page), script)
                for flag in re.findall(r"--[\w-]+", args):
                    shown.append(flag)
                    assert f'"{flag}"' in path.read_text(), (_name(page), script, flag)
    assert "--binding-only" in shown

# --- the tiers --------------------------------------------------------------------------------

def test_testing_page_tier_commands_name_the_registered_markers():
    """The markers setup.cfg registers, tests/conftest.py enforces and docs/testing.md's "Run
    the tests" commands select are one set; every tier has a command."""
    import configparser

    from tests.conftest import TIERS
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    registered = {line.split(":", 1)[0].split("(", 1)[0].strip()
                  for line in cfg["tool:pytest"]["markers"].strip().splitlines()}
    assert registered == set(TIERS)
    assert "--strict-markers" in cfg["tool:pytest"]["addopts"]
    section = _text(DOCS / "testing.md").split("**Run the tests.**", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert all(c.startswith(".venv/bin/python -m pytest -m ") for c in commands), commands
    selected = [re.search(r'pytest -m ("[^"]+"|\S+)', c).group(1).strip('"') for c in commands]
    named = {w for expr in selected for w in re.findall(r"\w+", expr)} - {"not", "and", "or"}
    assert named == registered, (named, registered)
