"""job.json: the resolved job spec as a run directory holds it, the only input workers read.

    {"schema": 2, "spec": {every key of launcher/core/spec.py's JobSpec}}

A job.json of schema 1 (written before the schema field: `{"format": 1, "spec": ...}`) is read
the same way; a newer schema is refused (launcher/core/rundir/schema.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.names import JOB_JSON
from launcher.core.rundir.schema import schema_of, stamped
from launcher.core.spec import JobSpec, build_spec

SCHEMA_1_FORMAT = 1  # schema 1's own "format" field, the only value it ever had


def spec_to_json(spec: JobSpec) -> str:
    return json.dumps(stamped({"spec": spec.to_dict()}), indent=2) + "\n"


def spec_from_json(path: str | os.PathLike) -> JobSpec:
    """Read the resolved spec a run directory holds (paths already absolute); `path` is the run
    directory or its job.json."""
    p = Path(path)
    if p.is_dir():
        p = p / JOB_JSON
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{p} not found: is this a packrun run directory?") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: corrupt {JOB_JSON} ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        raise UserError(f"{p}: corrupt {JOB_JSON} (no \"spec\" object)")
    if schema_of(doc, p) == 1 and doc.get("format") != SCHEMA_1_FORMAT:
        raise UserError(f"{p}: {JOB_JSON} format {doc.get('format')!r}, this packrun reads "
                        f"{SCHEMA_1_FORMAT} or a \"schema\" field; render the run again with "
                        "this version")
    return build_spec(doc["spec"], source=str(p), check_paths=False)
