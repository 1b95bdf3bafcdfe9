"""The test suite itself, read as source: every test can fail (it asserts, expects an exception,
or calls a helper that asserts), only tests/helpers.py decides what a missing tool or CI means,
and every tool a test asks need_tool() for has its Debian package on record."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from tests.helpers import APT_PACKAGES, REPO

pytestmark = pytest.mark.unit

TESTS = REPO / "tests"
HELPERS = TESTS / "helpers.py"
CHECKS = {"raises", "fail", "warns", "deprecated_call"}  # pytest's


@functools.cache  # parsed once for the three tests
def sources() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in sorted(TESTS.rglob("*.py"))}


def _checks_directly(node: ast.AST) -> bool:
    for n in ast.walk(node):
        if isinstance(n, (ast.Assert, ast.Raise)):
            return True
        if isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name.startswith("assert") or (name in CHECKS and isinstance(f, ast.Attribute)
                                              and getattr(f.value, "id", "") == "pytest"):
                return True  # np.testing.assert_*, pytest.raises / fail / warns, ...
    return False


def asserting_functions(tree: ast.Module, known: set[str] = frozenset()) -> set[str]:
    """Names of the functions in `tree` that check something, directly or through a function
    that does (in `tree`, or one of `known`)."""
    functions = {n.name: n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found = {name for name, f in functions.items() if _checks_directly(f)} | set(known)
    grew = True
    while grew:
        grew = False
        for name, f in functions.items():
            if name not in found and any(isinstance(n, ast.Name) and n.id in found
                                         for n in ast.walk(f)):
                found.add(name)
                grew = True
    return found


def test_every_test_can_fail():
    helpers = asserting_functions(ast.parse(HELPERS.read_text()))
    assert {"run_dir_of", "wait_for", "digests"} <= helpers   # the scan sees what helpers check
    silent = []
    for path, tree in sources().items():
        if not path.name.startswith("test_"):
            continue
        checking = asserting_functions(tree, helpers)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and \
                    not (_checks_directly(node) or any(isinstance(n, ast.Name) and n.id in checking
                                                       for n in ast.walk(node))):
                silent.append(f"{path.relative_to(REPO)}::{node.name}")
    assert silent == [], "tests that assert nothing (they cannot fail)"


def test_only_the_helpers_decide_what_a_missing_tool_or_ci_means():
    """A test needs a tool through need_tool() (skip here, fail in CI), or a service through
    unavailable(); it neither looks a command up itself nor reads CI."""
    found = []
    for path, tree in sources().items():
        if path == HELPERS:
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and n.attr == "which":
                found.append(f"{path.relative_to(REPO)}:{n.lineno}: .which")
            reads_ci = (isinstance(n, ast.Call) and n.args
                        and getattr(n.func, "attr", "") in ("get", "getenv")
                        and getattr(n.args[0], "value", None) == "CI") or \
                (isinstance(n, ast.Subscript) and getattr(n.slice, "value", None) == "CI")
            if reads_ci:
                found.append(f"{path.relative_to(REPO)}:{n.lineno}: reads CI")
            if isinstance(n, ast.Attribute) and n.attr == "skipif":
                found.append(f"{path.relative_to(REPO)}:{n.lineno}: skipif")
    assert found == []


def test_every_tool_a_test_needs_has_its_package_on_record():
    named = {}
    for path, tree in sources().items():
        if path.name == "test_helpers.py":  # tests need_tool() itself, with a tool of no package
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "need_tool" and n.args \
                    and isinstance(n.args[0], ast.Constant):
                named[n.args[0].value] = f"{path.relative_to(REPO)}:{n.lineno}"
    assert len(named) >= 5  # shellcheck, mpirun, scontrol, chromium, taskset, ...
    assert {tool: at for tool, at in named.items() if tool not in APT_PACKAGES} == {}
    # the ones named through a variable
    from src.native.kernels import COMPILER
    from tests.launcher.slurm.test_multinode import TOOLS
    assert sorted({COMPILER, *TOOLS} - set(APT_PACKAGES)) == []
