"""`packrun --help` and `packrun COMMAND --help`, written from the command methods themselves
(name, signature, docstring), printed plainly: no pager, no fire banner, exit 0.

Commands are shown as the README writes them, with hyphens (`show-batch`); python-fire accepts
both spellings when it dispatches. `dispatch_help` runs before fire: it answers help requests and
unknown command names, and leaves everything else to fire.
"""

from __future__ import annotations

import inspect
import sys

from launcher.core.errors import EXIT_USER_ERROR
from launcher.core.log import get_logger

log = get_logger(__name__)

HELP_FLAGS = ("--help", "-h")
KEYS_POINTER = "`packrun keys` lists every job key with its type, default and meaning."
LEVEL_FLAGS = ("Every command also takes --quiet / -q (warnings and errors only; no copy of the "
               "workers' output)\nand --verbose / -v (debug lines too, e.g. every command "
               "packrun runs).")
# What a flag's value is, where its name does not say it.
PLACEHOLDERS = {"resume": "RUN_DIR", "out": "PATH", "workers": "N", "node_rank": "N",
                "master_port": "PORT", "master_addr": "ADDR", "template_dir": "DIR",
                "dir": "DIR", "copy": "TEMPLATE", "server_ip": "IP[,IP...]",
                "device_ips": "IP,...", "hccn_conf": "FILE", "port": "PORT", "host": "ADDR"}


def shown_name(method_name: str) -> str:
    return method_name.replace("_", "-")


def commands(cls) -> dict[str, object]:
    """{shown name: method} in the order the class defines them."""
    return {shown_name(n): fn for n, fn in vars(cls).items()
            if not n.startswith("_") and callable(fn)}


def _target(fn):
    return inspect.unwrap(fn)


def _summary(fn) -> str:
    """The docstring's first sentence."""
    doc = (inspect.getdoc(_target(fn)) or "").split("\n\n", 1)[0].replace("\n", " ")
    line = doc.split(". ", 1)[0].split("; ", 1)[0].rstrip(".")
    if len(line) > 76:
        line = line.split(": ", 1)[0]
    if len(line) > 76:
        line = line[:73].rsplit(" ", 1)[0] + " ..."
    return line


def _params(fn) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(_target(fn)).parameters.values() if p.name != "self"]


def _is_positional(p: inspect.Parameter) -> bool:
    return p.default is inspect.Parameter.empty or p.name in ("job", "run_dir")


def _flag(p: inspect.Parameter) -> str:
    if p.default is False or p.default is True:
        return f"--{p.name}"
    if p.default is None or p.default == "" or p.name in PLACEHOLDERS:
        return f"--{p.name}={PLACEHOLDERS.get(p.name, p.name.upper())}"
    return f"--{p.name}={p.default}"


def usage(name: str, fn) -> str:
    parts = [f"packrun {name}"]
    for p in _params(fn):
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"{p.name.upper().rstrip('S')}...")
        elif p.kind is p.VAR_KEYWORD:
            parts.append("[--KEY=VALUE ...]")
        elif _is_positional(p):
            arg = p.name.upper()
            parts.append(arg if p.default is inspect.Parameter.empty else f"[{arg}]")
        else:
            parts.append(f"[{_flag(p)}]")
    return " ".join(parts)


def command_help(name: str, fn) -> str:
    doc = inspect.getdoc(_target(fn)) or ""
    flags = [p for p in _params(fn) if p.kind is p.POSITIONAL_OR_KEYWORD
             and not _is_positional(p)] + [p for p in _params(fn) if p.kind is p.KEYWORD_ONLY]
    lines = [f"usage: {usage(name, fn)}", "", doc, ""]
    if flags:
        lines.append("flags:")
        for p in flags:
            default = "off" if p.default is False else "on" if p.default is True else \
                "none" if p.default is None else repr(p.default)
            lines.append(f"  {_flag(p):<28} (default: {default})")
        if any(isinstance(p.default, bool) for p in flags):
            lines.append("  (on/off flags also take =true / =false)")
        lines.append("")
    if any(p.kind is p.VAR_KEYWORD for p in _params(fn)):
        lines.append("Every job key is also a flag here (--epochs=2); " + KEYS_POINTER)
    else:
        lines.append(KEYS_POINTER)
    lines.append(LEVEL_FLAGS)
    return "\n".join(lines) + "\n"


def top_help(cls) -> str:
    cmds = commands(cls)
    width = max(map(len, cmds)) + 2
    lines = ["usage: packrun COMMAND [ARGS] [--flag=value ...]", "",
             inspect.getdoc(cls) or "", "", "commands:"]
    lines += [f"  {name:<{width}}{_summary(fn)}" for name, fn in cmds.items()]
    takes_keys = [n for n, fn in cmds.items()
                  if any(p.kind is p.VAR_KEYWORD for p in _params(fn))]
    lines += ["", "`packrun COMMAND --help` shows a command's usage and flags.",
              f"Every job key is also a flag of {', '.join(takes_keys)} (--epochs=2); "
              + KEYS_POINTER, LEVEL_FLAGS]
    return "\n".join(lines) + "\n"


def dispatch_help(cls, argv: list[str]) -> int | None:
    """Answer `packrun`, `packrun --help`, `packrun help [CMD]`, `packrun CMD --help` and unknown
    commands; None when fire should run the command line."""
    cmds = commands(cls)
    if not argv or argv[0] in HELP_FLAGS or (argv[0] == "help" and len(argv) == 1):
        sys.stdout.write(top_help(cls))
        return 0
    if argv[0] == "help":
        argv = [argv[1], "--help"]
    name = shown_name(argv[0])
    if name not in cmds:
        close = [c for c in cmds if c.startswith(name[:3])] if name[:1] != "-" else []
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        log.error(f"packrun: error: unknown command {argv[0]!r}{hint}; commands: "
                  f"{', '.join(cmds)}. `packrun --help` describes them.")
        return EXIT_USER_ERROR
    if any(a in HELP_FLAGS for a in argv[1:]):  # (fire's own hint says `packrun CMD -- --help`)
        sys.stdout.write(command_help(name, cmds[name]))
        return 0
    return None
