"""Run directories: `<output_dir>/<name>-<YYYYmmdd-HHMMSS>` with `logs/` inside.

Two runs started in the same second get `<name>-<stamp>`, `<name>-<stamp>-2`, ...: the directory
is claimed with mkdir, so concurrent starts never share one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.rundir.names import JOB_JSON, LOGS
from launcher.core.spec import JobSpec, check_output_outside_data


def create_run_dir(spec: JobSpec, out: str | os.PathLike | None = None) -> Path:
    """Create a new, empty run directory (and its `logs/`) under `out` (default: the spec's
    output_dir) and return its absolute path."""
    check_output_outside_data(spec, out, "output_dir" if out is None else "--out")
    base = Path(out if out is not None else spec.output_dir).expanduser().resolve()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"output directory {base} is a file; set output_dir (or --out) to a "
                        "directory") from None
    except PermissionError:
        raise UserError(f"cannot create output directory {base}: permission denied; set "
                        "output_dir (or --out) to a writable directory") from None
    stem = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base / stem, 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            n += 1
            path = base / f"{stem}-{n}"
        except PermissionError:
            raise UserError(f"cannot create a run directory in {base}: permission denied; set "
                            "output_dir (or --out) to a writable directory") from None
    (path / LOGS).mkdir()
    return path



def new_run_dir(spec: JobSpec, out: str | os.PathLike | None = None) -> Path:
    """A new run directory holding the resolved spec (job.json), the only input workers read."""
    run_dir = create_run_dir(spec, out)
    write_atomic(run_dir / JOB_JSON, spec_to_json(spec))
    return run_dir
