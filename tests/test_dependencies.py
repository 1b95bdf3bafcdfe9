"""Every third-party module packrun imports is declared in setup.cfg's install_requires, so a
fresh `bash install.sh` gets it (psutil came in only as a dependency of mindspore once)."""

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.unit

OWN = {"launcher", "src", "tests"}


def imported_top_level_modules() -> set[str]:
    names = set()
    for folder in ("launcher", "src"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in OWN and n not in sys.stdlib_module_names}


def declared() -> set[str]:
    """install_requires and the optional extras (onnx: `packrun[onnx]`, imported only by the
    commands that need it, with a message naming the extra when it is missing)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    reqs = cfg["options"]["install_requires"].split("\n")
    reqs += cfg["options.extras_require"]["onnx"].split("\n")
    return {re.split(r"[<>=!~ \[]", r.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for r in reqs if r.strip()}


def test_every_imported_package_is_declared():
    dists = packages_distributions()
    missing = {}
    for module in imported_top_level_modules():
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared():
            missing[module] = sorted(names)
    assert not missing, f"imported but not in setup.cfg install_requires: {missing}"


def test_a_python_of_the_venv_starts_without_importing_the_install():
    """setup.cfg's package_dir makes the editable install a plain path in site-packages: with
    setuptools' default for a flat layout, an import finder (and pathlib, importlib.util, ...)
    was imported by every Python process before its first line, 15 ms of CPU each, thousands of
    times in a test run (node verbs, probes, workers) and once per packrun command."""
    import subprocess
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import launcher, src"],
                       capture_output=True, text=True, cwd="/", check=True)
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()]
    assert not [m for m in imported if "editable" in m], imported
    assert "pathlib" not in imported, "a Python start imports pathlib again (site-packages' .pth)"
