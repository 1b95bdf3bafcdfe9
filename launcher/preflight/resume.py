"""`--resume RUN_DIR` (debug and run): which run directory, and whether it can still run.

Accepts the run directory or its job.json. Before anything starts, the data the run trains on
must still be where job.json says (a moved data set would otherwise fail inside the worker);
whether last.ckpt still fits the job is checked by the worker (src/train.py), which can read it.
"""

from __future__ import annotations

from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.names import JOB_JSON
from launcher.core.spec import JobSpec


def resume_target(resume: str) -> tuple[Path, JobSpec]:
    """(run directory, its spec) for `--resume=RESUME`, or a UserError naming the fix."""
    path = Path(resume).expanduser().resolve()
    if path.is_file():
        if path.name != JOB_JSON:
            raise UserError(f"--resume {path}: a file; give the run directory (the folder that "
                            f"holds {JOB_JSON})")
        path = path.parent
    if not path.exists():
        raise UserError(f"--resume {path}: no such run directory")
    spec = spec_from_json(path)
    for key in ("train_dir", "val_dir"):
        folder = Path(getattr(spec, key))
        if not folder.is_dir():
            raise UserError(f"{path / JOB_JSON}: {key} {folder} is gone (the data moved?); put "
                            f"the data back there, or start a new run with {key} set to where "
                            "it is now")
    return path, spec
