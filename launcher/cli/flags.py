"""Job-key flags reach the spec as the text the user typed.

python-fire evaluates every flag value as a Python literal: `--name=20240101_1` becomes the int
202401011 (underscores are digit separators), `--name=1.10` the float 1.1, `--master_addr=1e3`
1000.0. For a job key whose type is a string or a number, packrun wants the text itself: string
keys keep it as typed, and number keys are parsed strictly by the spec (launcher/core/spec.py),
which names the key when the text is no number (`--epochs=²`, `--epochs=--5`, a 400-digit lr).
`keep_text` rewrites such flags into quoted literals before fire sees them, so fire hands over
the exact string. Other flags (bool and list job keys, each command's own flags) are untouched.
"""

from __future__ import annotations

from launcher.core.errors import UserError
from launcher.core.spec import JobSpec

_TEXT_TYPES = ("str", "int", "float")


def _text_key(flag: str) -> bool:
    f = JobSpec.fields().get(flag.replace("-", "_"))
    return f is not None and f.type in _TEXT_TYPES


def keep_text(argv: list[str]) -> list[str]:
    """argv with the value of every `--KEY=VALUE` / `--KEY VALUE` of a string or number job key
    replaced by a Python string literal of VALUE (what fire turns back into VALUE, unchanged)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg and _text_key(arg[2:].split("=", 1)[0]):
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={value!r}")
        elif (arg.startswith("--") and _text_key(arg[2:]) and i + 1 < len(argv)
              and not argv[i + 1].startswith("--")):
            out += [arg, repr(argv[i + 1])]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def flag(name: str, value) -> bool:
    """A command's own on/off flag as fire hands it over: `--x` is True, `--x=false` a string."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes", "false", "0", "no"):
        return str(value).lower() in ("true", "1", "yes")
    raise UserError(f"--{name}={value!r}: give --{name} (on) or --{name}=false")
