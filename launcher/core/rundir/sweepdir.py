"""Reading a sweep directory (launcher/sweep writes it): sweep.json lists the points, each an
ordinary run directory below it. `packrun ls`, `sweep-report`, `report`, `cancel` and the array's
follower read it here, so nothing that reads runs needs the sweep package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.names import SWEEP_FORMAT, SWEEP_JSON


def read_sweep(sweep_dir: str | os.PathLike) -> dict:
    """sweep.json, with each point's absolute run directory as "path"."""
    d = Path(str(sweep_dir)).expanduser().resolve()
    try:
        doc = json.loads((d / SWEEP_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{d} is not a sweep directory (no {SWEEP_JSON}); pass the directory "
                        "`packrun sweep` printed") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{d / SWEEP_JSON} is corrupt ({e})") from None
    if doc.get("format") != SWEEP_FORMAT:
        raise UserError(f"{d / SWEEP_JSON}: format {doc.get('format')!r}, this packrun reads "
                        f"{SWEEP_FORMAT}")
    for p in doc["points"]:
        p["path"] = d / p["dir"]
    doc["path"] = d
    return doc


def is_sweep_dir(path: str | os.PathLike) -> bool:
    return (Path(str(path)) / SWEEP_JSON).is_file()


def sweep_doc(sweep_dir: Path) -> dict | None:
    """sweep.json as it is (no checks), or None when it is missing or corrupt (`packrun ls`)."""
    try:
        doc = json.loads((sweep_dir / SWEEP_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
