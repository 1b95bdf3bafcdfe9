"""A sweep's plan: one job over a set of points (the cross product of `--grid KEY=V1,V2`, a
`[sweep]` table in the job file, or `--points=FILE`), each point an ordinary run directory.

A sweep is a layer above run directories:

    <output_dir>/<name>-sweep-<stamp>/
        sweep.json                  the points: index, directory, overrides; how they run
        lr=0.01_mode=finetune/      one ordinary run directory per point, named by the keys
        lr=0.001_mode=finetune/     that differ between points (job.json, launch files, logs)
        ...
        job_array.sbatch            with --slurm: ONE Slurm job array, task i starts point i

Here: the points (grid, points file, [sweep] table), their validation and their directory
names, and `plan_sweep`: every point is resolved, checked and rendered (pure) before any
directory is written or any point starts, so a bad value in the last point is an error naming it
before the first one runs. The sweep directory is written by launcher/sweep/sweepdir.py (and read
by launcher/core/rundir/sweepdir.py); launcher/sweep/local.py runs the points here,
launcher/sweep/array.py as one Slurm job array.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.spec import JobSpec, build_spec, read_job_file
from launcher.preflight.checks import check_before_launch
from launcher.preflight.data import preflight
from launcher.render.artifacts import render_artifacts

SWEEP_TABLE = "sweep"          # the job file's [sweep] table: key = [values]
# Keys a sweep cannot vary: where its directories go.
FIXED_KEYS = ("output_dir",)
MAX_DIR_NAME = 120


@dataclass
class Point:
    index: int
    overrides: dict       # the point's own values (grid / points file), as given
    spec: JobSpec
    name: str = ""        # its directory's name inside the sweep directory

    def label(self, keys) -> str:
        return ", ".join(f"{k}={_show(self.spec, k)}" for k in keys)


# ---------------------------------------------------------------------------------------------
# Points
# ---------------------------------------------------------------------------------------------

def repeated_flag(argv: list[str], flag: str) -> list[str]:
    """Every value of a flag given several times (`--grid A=1,2 --grid B=x,y`, or `--grid=...`):
    python-fire keeps only the last one."""
    values, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == f"--{flag}" and i + 1 < len(argv):
            values.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith(f"--{flag}="):
            values.append(arg.split("=", 1)[1])
        i += 1
    return values


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """["lr=0.01,0.001", "mode=finetune,fixed_feature"] -> {"lr": [...], "mode": [...]}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = str(item).partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key or not values.strip():
            raise UserError(f"--grid {item!r}: write KEY=V1,V2,... (e.g. --grid lr=0.01,0.001)")
        if key in grid:
            raise UserError(f"--grid {key} is given twice; list all its values in one "
                            f"--grid {key}=V1,V2,...")
        grid[key] = [v.strip() for v in values.split(",")]
        if any(v == "" for v in grid[key]):
            raise UserError(f"--grid {item!r} has an empty value; write KEY=V1,V2 without "
                            "stray commas")
    return grid


def read_points_file(path: str | os.PathLike) -> list[dict]:
    """One set of overrides per line: `lr=0.01 mode=finetune` (shell words, `--` optional);
    blank lines and `#` comments are skipped."""
    p = Path(str(path))
    if not p.is_file():
        raise UserError(f"--points {p} not found; give a file with one set of overrides per line, "
                        "e.g. `lr=0.01 mode=finetune`")
    points = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise UserError(f"{p}:{n}: {e}; quote values the way a shell would") from None
        if not words:
            continue
        point = {}
        for w in words:
            key, sep, value = w.removeprefix("--").partition("=")
            if not sep or not key:
                raise UserError(f"{p}:{n}: {w!r} is not KEY=VALUE; write e.g. lr=0.01 "
                                "mode=finetune")
            if key in point:
                raise UserError(f"{p}:{n}: key {key!r} is given twice on this line")
            point[key] = value
        points.append(point)
    if not points:
        raise UserError(f"--points {p} holds no points; write one set of overrides per line")
    return points


def _table_grid(job: str, table) -> dict[str, list]:
    if not isinstance(table, dict):
        raise UserError(f"{job}: `sweep` must be a table, e.g. [sweep] with lr = [0.01, 0.001]")
    grid = {}
    for k, v in table.items():
        values = v if isinstance(v, list) else [v]
        if not values:
            raise UserError(f"{job}: [sweep] {k} is an empty list; give at least one value")
        grid[k] = values
    return grid


def cross_product(grid: dict[str, list]) -> list[dict]:
    points: list[dict] = [{}]
    for key, values in grid.items():
        points = [p | {key: v} for p in points for v in values]
    return points


def job_values(job: str) -> tuple[dict, dict[str, list]]:
    """(the job file's keys without its [sweep] table, that table as a grid)."""
    p = Path(str(job))
    table = {}
    if p.is_file():
        try:
            table = tomllib.loads(p.read_text(encoding="utf-8")).get(SWEEP_TABLE, {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            pass  # read_job_file names the problem
    values = read_job_file(p)
    values.pop(SWEEP_TABLE, None)
    return values, _table_grid(str(p), table) if table else {}


def point_sets(job: str, grid_items: list[str], points_file: str | None) -> tuple[dict, list[dict]]:
    """(base job values, [overrides of each point]) from the job file's [sweep] table, --grid
    (which replaces the table's entry for the same key) and --points (one point per line;
    with a grid as well, each line is crossed with the grid)."""
    base, grid = job_values(job)
    grid |= parse_grid(grid_items)
    lines = read_points_file(points_file) if points_file else [{}]
    points = [line | g for line in lines for g in cross_product(grid)]
    if points == [{}]:
        raise UserError("a sweep needs points: --grid KEY=V1,V2 (repeatable), a [sweep] table in "
                        "the job file, or --points=FILE")
    return base, points


def resolve_points(job: str, base: dict, sets: list[dict], cli: dict) -> list[Point]:
    """Validate every point (job file < CLI flags < the point's own values) before anything
    runs; an error names the point and its values."""
    points = []
    for i, overrides in enumerate(sets):
        fixed = next((k for k in overrides if k in FIXED_KEYS), None)
        if fixed:
            raise UserError(f"sweep point {i + 1} of {len(sets)}: key '{fixed}' cannot vary in a "
                            "sweep (it places the sweep directory); set it for the whole sweep")
        values = base | cli | overrides
        try:
            spec = build_spec(values, source=str(job),
                              lenient_keys=tuple(cli) + tuple(overrides))
        except UserError as e:
            given = " ".join(f"{k}={v}" for k, v in overrides.items())
            raise UserError(f"sweep point {i + 1} of {len(sets)} ({given}): {e}") from None
        points.append(Point(i, overrides, spec))
    return points


def differing_keys(points: list[Point]) -> list[str]:
    """The keys whose resolved values differ between points, in the order they were given."""
    given = list(dict.fromkeys(k for p in points for k in p.overrides))
    return [k for k in given if len({json.dumps(getattr(p.spec, k)) for p in points}) > 1] \
        or given


def _show(spec: JobSpec, key: str) -> str:
    value = getattr(spec, key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def _dir_part(key: str, spec: JobSpec) -> str:
    value = _show(spec, key)
    if spec.fields()[key].metadata["path"] and value:
        value = Path(value).name or value
    return f"{key}={re.sub(r'[^A-Za-z0-9._+-]+', '-', value).strip('-') or 'none'}"


def name_points(points: list[Point], keys: list[str]) -> None:
    """Each point's directory name: its values of the differing keys, `lr=0.01_mode=finetune`
    (unique: a clash or an over-long name gets the point's number)."""
    seen: set[str] = set()
    for p in points:
        name = "_".join(_dir_part(k, p.spec) for k in keys) or f"point{p.index}"
        if len(name) > MAX_DIR_NAME:
            name = name[:MAX_DIR_NAME].rstrip("_-.")
        if name in seen or name.startswith("."):
            name = f"{name}_{p.index}"
        seen.add(name)
        p.name = name


# ---------------------------------------------------------------------------------------------
# The sweep directory
# ---------------------------------------------------------------------------------------------

@dataclass
class Plan:
    job: str
    base: JobSpec          # the job without any point's values (names the sweep)
    points: list[Point]
    keys: list[str]
    how: str               # "debug", "run" or "slurm"
    parallel: int
    artifacts: list[dict[str, str]]   # per point: {relative path: text} besides job.json
    sweep_dir: Path        # where the artifacts were rendered for


def plan_sweep(job: str, cli: dict, grid_items: list[str], points_file: str | None, *,
               how: str, parallel: int | None, check: bool = True) -> Plan:
    """Resolve, check and render every point; nothing is written."""
    if job is None:
        raise UserError("give a job file: packrun sweep JOB --grid KEY=V1,V2 ...")
    if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int)
                                 or parallel < 1):
        raise UserError(f"--parallel is {parallel!r}; give a whole number >= 1")
    base_values, sets = point_sets(job, grid_items, points_file)
    try:
        base = build_spec(base_values | cli, source=str(job), lenient_keys=tuple(cli),
                          check_paths=False)
    except UserError:  # the job is only complete with a point's values (e.g. a swept path)
        base = None
    points = resolve_points(job, base_values, sets, cli)
    if parallel is None:  # one at a time on this machine; every task at once on Slurm
        parallel = len(points) if how == "slurm" else 1
    parallel = min(parallel, len(points))
    keys = differing_keys(points)
    name_points(points, keys)
    if base is None:
        base = points[0].spec
    if how == "run" and parallel > 1:
        ports = [p.spec.master_port for p in points if p.spec.master_port]
        if ports:
            raise UserError(f"--parallel={parallel} starts several launches at once, but "
                            f"master_port is {ports[0]}: they would share one scheduler port. "
                            "Use master_port = 0 (a free port per launch)")
    sweep_dir = sweep_dir_path(base)
    artifacts = []
    for p in points:
        where = f"sweep point {p.index + 1} of {len(points)} ({p.label(keys)})"
        try:
            if check:
                _check_point(p.spec, how)
            artifacts.append({} if how == "debug" else
                             render_artifacts(p.spec, sweep_dir / p.name, slurm=how == "slurm"))
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    return Plan(str(job), base, points, keys, how, parallel, artifacts, sweep_dir)


def _check_point(spec: JobSpec, how: str) -> None:
    """What the single-run command checks before it starts (without touching the disk)."""
    if how == "debug":
        preflight(spec)
    else:
        if how == "run" and spec.nodes != 1:
            raise UserError(f"nodes is {spec.nodes}: a local sweep starts the workers of this "
                            "machine; use --slurm for several nodes")
        check_before_launch(spec, slurm=how == "slurm")


def sweep_dir_path(base: JobSpec, stamp: str | None = None) -> Path:
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    return Path(base.output_dir).expanduser().resolve() / f"{base.name}-sweep-{stamp}"
