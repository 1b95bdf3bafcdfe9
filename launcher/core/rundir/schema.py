"""The schema of a run directory's own JSON files: job.json, run_state.json and failure.json
carry `"schema": RUN_DIR_SCHEMA` (launcher/core/rundir/names.py). A file without the field was
written by a packrun before the schema (schema 1) and is read as before; a file of a newer
schema than this packrun knows is refused with one line, never misread.
"""

from __future__ import annotations

import json
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.names import RUN_DIR_SCHEMA


class NewerSchema(UserError):
    """The file was written by a newer packrun than this one (its schema: `schema`)."""

    def __init__(self, message: str, schema: int):
        super().__init__(message)
        self.schema = schema


def stamped(doc: dict) -> dict:
    """`doc` as this packrun writes it: the schema first."""
    return {"schema": RUN_DIR_SCHEMA} | {k: v for k, v in doc.items() if k != "schema"}


def schema_of(doc: dict, path: str | Path) -> int:
    """The schema of a run-directory file's contents `doc` (1 without the field); a newer one
    than this packrun's is a NewerSchema error naming the run directory."""
    schema = doc.get("schema", 1)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise UserError(f"{path}: schema {schema!r} is not a schema number (1, 2, ...)")
    if schema > RUN_DIR_SCHEMA:
        raise NewerSchema(f"{Path(path).parent} was written by a newer packrun (schema {schema}); "
                          f"this packrun reads schemas up to {RUN_DIR_SCHEMA}: use that packrun "
                          "or a newer one", schema)
    return schema


def read_json(path: str | Path) -> dict | None:
    """A run-directory JSON file (job.json, run_state.json, failure.json): its contents, None
    when it is missing, unreadable or no JSON object; NewerSchema when a newer packrun wrote it."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    schema_of(doc, path)
    return doc
