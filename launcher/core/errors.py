"""The one exception type that means "the user's input is wrong; tell them how to fix it".

Anything raised as `UserError` is printed as a single `packrun: error: ...` message and the
process exits with status 2, never with a traceback. Everything else is a bug and keeps its
traceback.
"""

EXIT_USER_ERROR = 2
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a service did not answer (an outage): worth retrying
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), from every entry point, as a shell reports it


class UserError(Exception):
    """Bad input (job file, flag, data, checkpoint, environment): the message names the culprit
    and the fix."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what it interrupted and what was (not) left behind: one line and exit status
    130 (EXIT_INTERRUPTED) like any Ctrl-C, never the 2 of bad input, which is never retried."""


class Unavailable(Exception):
    """A service packrun needs did not answer (Slurm's controller): an outage, not bad input.
    One `packrun: error: ...` line like a UserError, but exit status 69 (EXIT_UNAVAILABLE), which
    restart and requeue logic retries, where the 2 of bad input is never retried."""
