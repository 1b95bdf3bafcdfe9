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
