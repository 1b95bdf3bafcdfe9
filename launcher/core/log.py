"""The launcher's console: every message goes through `logging`, as the lines it always printed.

Each module logs to `get_logger(__name__)` (under "launcher"); one handler prints the message as
it is ("packrun: ..."): information on stdout; debug lines, warnings and errors on stderr. An
information line that belongs on stderr (because the command's stdout is its result: `render`
prints the command to run there) is logged with `extra=STDERR`. What a command prints as its
result (a path, a table, a status, the run directory) is not a log line: it is print()ed on
stdout whatever the level.

`packrun --quiet CMD ...` keeps warnings and errors only, and no copy of the workers' output on
the console (the logs in the run directory are complete); `--verbose` adds debug lines
("packrun: debug: ..."), e.g. every command packrun runs. The level is also handed to the
packrun processes a command starts (a sweep's points, the demo's export) through
LEVEL_ENV, which a user may set too; a flag on the command line wins.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import TextIO

from launcher.core.rundir.names import LOG_LEVEL_ENV

ROOT = "launcher"
LEVEL_ENV = LOG_LEVEL_ENV  # quiet | normal | verbose
STDERR = {"stream": "stderr"}   # log.info(msg, extra=STDERR): an information line for stderr
STDOUT = {"stream": "stdout"}   # log.error(msg, extra=STDOUT): an error in a report on stdout
LEVELS = {"quiet": logging.WARNING, "normal": logging.INFO, "verbose": logging.DEBUG}
FLAGS = {"--quiet": "quiet", "-q": "quiet", "--verbose": "verbose", "-v": "verbose"}


class ConsoleHandler(logging.Handler):
    """Writes to the sys.stdout / sys.stderr of the moment (so redirections and capture work)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            default = "stdout" if record.levelno == logging.INFO else "stderr"
            stream = sys.stderr if getattr(record, "stream", default) == "stderr" else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 (as logging's own handlers do: report, never raise)
            self.handleError(record)


class ConsoleFormatter(logging.Formatter):
    """The message as it is; debug lines say that they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"packrun: debug: {text}" if record.levelno == logging.DEBUG else text


def _root() -> logging.Logger:
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, ConsoleHandler) for h in root.handlers):
        handler = ConsoleHandler()
        handler.setFormatter(ConsoleFormatter())
        root.addHandler(handler)
        root.setLevel(LEVELS.get(os.environ.get(LEVEL_ENV, ""), logging.INFO))
        root.propagate = False
    return root


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (pass __name__), with the console handler installed."""
    _root()
    return logging.getLogger(name)


def set_level(name: str) -> None:
    """quiet, normal or verbose, for this process and the packrun processes it starts."""
    _root().setLevel(LEVELS[name])
    os.environ[LEVEL_ENV] = name


def quiet() -> bool:
    return not _root().isEnabledFor(logging.INFO)


class _Discard(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


def console() -> TextIO:
    """Where the copy of the workers' output goes: stdout, or nowhere under --quiet."""
    return _Discard() if quiet() else sys.stdout


def take_level_flags(argv: list[str]) -> list[str]:
    """Set the level from --quiet / -q and --verbose / -v anywhere before a `--` (the last one
    wins; without one, LEVEL_ENV or normal); return the arguments without them (for fire)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    chosen = [FLAGS[a] for a in argv[:cut] if a in FLAGS]
    if chosen:
        set_level(chosen[-1])
    else:
        _root()
    return [a for a in argv[:cut] if a not in FLAGS] + argv[cut:]
