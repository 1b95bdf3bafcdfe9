"""How values reach a rendered launch script: the one quoting filter and the guard behind it.

Every `{{ value }}` of a launch template passes `finalize` (installed as the Jinja environment's
finalize, so a template added or edited later, and a site's own template_dir, get it too):

  `{{ x | sh }}`        shell-quoted (shlex.quote): paths, env values, anything free-form;
  `{{ x | sbatch }}`    a word for an `#SBATCH` line (sbatch splits at blanks, reads `"` and `\\`
                        and ends the line at `#`; there is no shell quoting there);
  `{{ x | verbatim }}`  the site's own shell lines (env_setup) and #SBATCH options
                        (sbatch_extra), and packrun's own shell snippets: text meant as code;
  `{{ x }}`             numbers, and words that are inert anywhere in a script, in a comment,
                        an #SBATCH line or a command: [A-Za-z0-9._,:/@%+=-] only. The spec's
                        grammars (launcher/core/spec.py) make every bare job value such a word.

Anything else raises UnsafeValue at render time, naming the value, instead of writing a script
in which a job value could end a comment or a quoted word and run as a command. No filter lets
a control character (newline, CR, NUL, ...) through.
"""

from __future__ import annotations

import re
import shlex

from launcher.core.errors import UserError

SAFE_WORD = re.compile(r"[A-Za-z0-9._,:/@%+=-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
SBATCH_BAD = re.compile(r"[\s\"'\\#]")


class UnsafeValue(UserError):
    """A value would reach a script unquoted, or holds what no quoting makes safe there."""


class Quoted(str):
    """Text already made safe for a script (by one of the filters below)."""


def _refuse_control(value: str, how: str) -> None:
    m = _CONTROL.search(value)
    if m:
        raise UnsafeValue(f"{value!r} holds the control character {m.group()!r}, which cannot "
                          f"go into a launch script ({how}); use one line of printable text")


def sh(value) -> Quoted:
    """The quoting filter: one shell word, whatever the text (safe in a comment too). Text with
    `$` or a backtick is double-quoted with those escaped rather than single-quoted, which is
    equally inert but what shellcheck reads as intended (no SC2016)."""
    text = str(value)
    _refuse_control(text, "shell-quoted")
    if "$" in text or "`" in text:
        return Quoted('"' + re.sub(r'([$`"\\])', r"\\\1", text) + '"')
    return Quoted(shlex.quote(text))


def sbatch(value) -> Quoted:
    """A value of an `#SBATCH --option=VALUE` line."""
    text = str(value)
    _refuse_control(text, "#SBATCH line")
    m = SBATCH_BAD.search(text)
    if m:
        raise UnsafeValue(f"{text!r} holds {m.group()!r}, which an #SBATCH line cannot carry "
                          "(sbatch splits at blanks and reads quotes, backslashes and '#' "
                          "itself); choose a value without it")
    return Quoted(text)


def verbatim(value) -> Quoted:
    """Text rendered as written: only the site's lines and packrun's own snippets."""
    text = str(value)
    _refuse_control(text, "verbatim line")
    return Quoted(text)


def finalize(value):
    """Jinja's finalize: what every `{{ ... }}` of a launch template yields."""
    if isinstance(value, Quoted) or value is None:
        return value
    if isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    if SAFE_WORD.fullmatch(text):
        return text
    raise UnsafeValue(f"a launch template would write {text!r} into a script unquoted; a value "
                      "that is not a plain word (letters, digits, . _ , : / @ % + = -) must go "
                      "through `| sh` (or `| sbatch` on an #SBATCH line)")


FILTERS = {"sh": sh, "sbatch": sbatch, "verbatim": verbatim}
