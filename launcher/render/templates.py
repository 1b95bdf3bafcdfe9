"""`packrun templates`: the launch templates, the variables each receives, and a site's copy.

A site overrides a template by putting a file of the same name in a directory and pointing the
job key `template_dir` at it (launcher/render/artifacts.py searches it before templates/); every
other template is inherited. Each template states its variables in the `{# ... #}` comment at its
top, which is what this module prints.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.paths import TEMPLATES

# Rendered by `packrun report` from packrun's own directory, never from a template_dir.
NOT_OVERRIDABLE = {"report.html.j2"}
_TOP_COMMENT = re.compile(r"\{#(.*?)#\}", re.S)


def launch_templates() -> list[Path]:
    return sorted(p for p in TEMPLATES.glob("*.j2") if p.name not in NOT_OVERRIDABLE)


def describe(path: Path) -> tuple[str, str]:
    """(what the template renders, its variables) from its top comment."""
    m = _TOP_COMMENT.search(path.read_text(encoding="utf-8"))
    text = " ".join(m.group(1).split()) if m else ""
    what, _, variables = text.partition("Variables:")
    return what.strip(), variables.strip() or "(none stated)"


def listing(template_dir: str = "") -> str:
    site = Path(template_dir) if template_dir else None
    lines = []
    for path in launch_templates():
        what, variables = describe(path)
        overridden = site is not None and (site / path.name).is_file()
        lines += [f"{path.name}{'   (overridden in ' + str(site) + ')' if overridden else ''}",
                  f"    {what}", f"    variables: {variables}"]
    lines.append("Override one: packrun templates --copy NAME DIR, edit DIR/NAME, then set "
                 "template_dir = \"DIR\" in the job file (or --template_dir=DIR).")
    return "\n".join(lines)


def copy_template(name: str, directory: str) -> Path:
    """Copy packrun's template NAME into DIRECTORY (created) as the start of a site override."""
    names = [p.name for p in launch_templates()]
    if name not in names:
        raise UserError(f"no launch template {name!r}; choose one of {', '.join(names)}")
    target = Path(directory) / name
    if target.exists():
        raise UserError(f"{target} exists; remove it first or copy into another directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEMPLATES / name, target)
    return target


def templates_command(copy: str | None = None, directory: str | None = None,
                      template_dir: str = "") -> str:
    """`packrun templates [--template_dir=DIR]` lists; `packrun templates --copy NAME DIR`
    copies."""
    if copy is None:
        if directory is not None:
            raise UserError(f"unexpected argument {directory!r}; usage: packrun templates "
                            "[--template_dir=DIR] or packrun templates --copy NAME DIR")
        if template_dir and not Path(template_dir).is_dir():
            raise UserError(f"--template_dir {template_dir} is not a directory")
        return listing(template_dir)
    if directory is None:
        raise UserError(f"usage: packrun templates --copy {copy} DIR (the directory to copy "
                        "it into)")
    target = copy_template(str(copy), str(directory))
    return f"packrun: copied {copy} to {target}; set template_dir = \"{target.parent}\""
