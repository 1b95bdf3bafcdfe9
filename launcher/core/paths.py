"""Where packrun's own files are: the repository root, and what the launcher takes from it.

The one definition of the repository root; everything else (the worker script, the templates,
the demo's job files, the tests) is named relative to it.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
WORKER_SCRIPT = REPO / "src" / "train.py"
