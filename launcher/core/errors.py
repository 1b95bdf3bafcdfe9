"""The one exception type that means "the user's input is wrong; tell them how to fix it".

Anything raised as `UserError` is printed as a single `packrun: error: ...` message and the
process exits with status 2, never with a traceback. Everything else is a bug and keeps its
traceback.
"""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input (job file, flag, data, checkpoint, environment): the message names the culprit
    and the fix."""
