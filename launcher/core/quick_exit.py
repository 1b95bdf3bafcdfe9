"""Leaving a process that imported MindSpore without its slow teardown.

At interpreter exit Python frees MindSpore's modules and objects one by one; that took 0.5-1 s
after every worker and every `packrun export` / `predict`, and writes nothing. `leave(status)`
runs the exit handlers (logging's, MindSpore's dataset iterators' and checkpoint saver's),
flushes the standard streams and ends the process with `status` at once.

Not for a rank of a collective: MindSpore leaves its cluster in that teardown
(compute_graph_node.cc, Finalize), and its peers and scheduler wait for it.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_status(code: object) -> int:
    """The status `sys.exit(code)` would give: None is 0, an int itself; anything else is
    printed to stderr and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def leave(code: object) -> NoReturn:
    """End the process with `exit_status(code)` after the exit handlers ran."""
    status = exit_status(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
