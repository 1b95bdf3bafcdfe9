"""Where packrun's own files are: the repository root, and what the launcher takes from it.

The one definition of the repository root; everything else (the worker script, the templates,
the demo's job files, the tests) is named relative to it.
"""

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
WORKER_SCRIPT = REPO / "src" / "train.py"


def importable(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: this process's) whose PYTHONPATH starts with the repository:
    a child `python -m launcher...` / `src...` imports this checkout, installed or not."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), out.get("PYTHONPATH", "")) if p)
    return out
