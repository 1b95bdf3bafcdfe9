"""The architecture holds: the import contracts (`lint-imports`, pyproject.toml), no module
reaching into another module's private names, and every run/sweep file name and PACKRUN_*
variable spelt only in launcher/core/rundir/names.py."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.core.rundir import names

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("launcher", "src")
NAMES_PY = REPO / "launcher" / "core" / "rundir" / "names.py"


def modules() -> list[Path]:
    return sorted(p for top in FIRST_PARTY for p in (REPO / top).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def private_uses(path: Path) -> list[str]:
    """`from M import _x`, `M._x` and `import M._x` of first-party modules M other than this
    one, as "path:line: what"."""
    own = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    bound: dict[str, str] = {}   # local name -> the first-party module it is bound to

    def where(node) -> str:
        return f"{path.relative_to(REPO)}:{node.lineno}"

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module \
                and node.module.split(".")[0] in FIRST_PARTY and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if is_private(alias.name) and node.module != own:
                    found.append(f"{where(node)}: from {node.module} import {alias.name}")
                elif is_module(target):
                    bound[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in FIRST_PARTY:
                    continue
                if any(is_private(part) for part in alias.name.split(".")):
                    found.append(f"{where(node)}: import {alias.name}")
                bound[alias.asname or alias.name.split(".")[0]] = \
                    alias.name if alias.asname else alias.name.split(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in bound:
            continue
        dotted = ".".join([bound[value.id], *reversed(chain[1:])])
        if is_module(dotted) and dotted != own:
            found.append(f"{where(node)}: {dotted}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_name():
    found = [use for path in modules() for use in private_uses(path)]
    assert not found, ("a module uses another module's _private name (make it public where it "
                       "is defined, or move the code):\n" + "\n".join(found))


def test_the_private_name_scan_sees_each_form(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "launcher" / "pkg").mkdir(parents=True)
    (tmp_path / "launcher" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "launcher" / "pkg" / "a.py").write_text("_x = 1\n__all__ = []\ny = _x\n")
    b = tmp_path / "launcher" / "pkg" / "b.py"
    b.write_text("from launcher.pkg.a import _x, __all__\n"
                 "from launcher.pkg import a\n"
                 "import launcher.pkg.a as aa\n"
                 "import launcher.pkg.a\n"
                 "print(a._x, aa._x, launcher.pkg.a._x, a.__all__, a.y)\n")
    assert [u.split(": ", 1)[1] for u in private_uses(b)] == [
        "from launcher.pkg.a import _x", "launcher.pkg.a._x", "launcher.pkg.a._x",
        "launcher.pkg.a._x"]
    assert private_uses(tmp_path / "launcher" / "pkg" / "a.py") == []


LAZY = ("src", "mindspore", "matplotlib")  # the worker and its libraries: seconds to import


def module_level_imports(tree: ast.Module):
    """Imports that run when the module is imported: its top level, `if` / `try` blocks
    included; not those inside functions or classes."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", []) \
                + [n for h in getattr(node, "handlers", []) for n in h.body]


def test_the_launcher_imports_the_worker_and_mindspore_only_inside_functions():
    """`packrun ls` or `status` on a login node never pays for MindSpore or matplotlib; the
    commands that need them (pyproject.toml's exceptions for `src`) import them where used."""
    found = []
    for path in sorted((REPO / "launcher").rglob("*.py")):
        for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            names_ = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            found += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names_
                      if n.split(".")[0] in LAZY]
    assert not found, "module-level imports of the worker or its libraries:\n" + "\n".join(found)


# ---------------------------------------------------------------------------------------------
# One names module
# ---------------------------------------------------------------------------------------------

def protocol_names() -> set[str]:
    """Every run- and sweep-directory file name names.py defines (PACKRUN_* variables are
    matched by their prefix)."""
    values: set[str] = set()
    for key, value in vars(names).items():
        if key.startswith("_") or not key.isupper():
            continue
        items = value.values() if isinstance(value, dict) else \
            value if isinstance(value, tuple) else [value]
        values |= {v for v in items if isinstance(v, str) and not v.startswith("PACKRUN_")}
    return values


def literals(tree: ast.AST):
    """The string constants of a module's code, docstrings left out."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            docstrings.add(id(node.body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node


def test_run_directory_names_and_packrun_variables_are_spelt_only_in_names_py():
    file_names = protocol_names()
    assert {"job.json", "sweep.json", "run_state.json", "failure.json"} <= file_names
    found = []
    for path in modules():
        if path == NAMES_PY:
            continue
        for node in literals(ast.parse(path.read_text(encoding="utf-8"))):
            if "PACKRUN_" in node.value or node.value in file_names:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, ("a run/sweep directory name or PACKRUN_* variable spelt outside "
                       "launcher/core/rundir/names.py (import it from there):\n"
                       + "\n".join(found))


def test_every_packrun_variable_has_one_name_in_names_py():
    variables = [v for k, v in vars(names).items()
                 if k.isupper() and isinstance(v, str) and v.startswith("PACKRUN_")]
    assert len(variables) == len(set(variables))
    assert {"PACKRUN_CONSOLE_TTY", "PACKRUN_DEVICE", "PACKRUN_CORES", "PACKRUN_RANK_CORES",
            "PACKRUN_LOG_LEVEL", "PACKRUN_NATIVE", "PACKRUN_NATIVE_THREADS"} <= set(variables)


# ---------------------------------------------------------------------------------------------
# The import contracts
# ---------------------------------------------------------------------------------------------

def test_the_import_contracts_hold():
    """pyproject.toml's [tool.importlinter]: the layers, no cycle, src only through
    launcher.core. import-linter is a test dependency (setup.cfg's `test` extra pins it)."""
    program = ("import sys; from importlinter.cli import lint_imports_command; "
               "sys.argv = ['lint-imports', '--no-cache']; lint_imports_command()")
    r = subprocess.run([sys.executable, "-c", program],
                       cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout
