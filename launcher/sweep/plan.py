"""`packrun sweep`: one job over a set of points (the cross product of `--grid KEY=V1,V2`, a
`[sweep]` table in the job file, or `--points=FILE`), each point an ordinary run directory.

A sweep is a layer above run directories:

    <output_dir>/<name>-sweep-<stamp>/
        sweep.json                  the points: index, directory, overrides; how they run
        lr=0.01_mode=finetune/      one ordinary run directory per point, named by the keys
        lr=0.001_mode=finetune/     that differ between points (job.json, launch files, logs)
        ...
        job_array.sbatch            with --slurm: ONE Slurm job array, task i starts point i

Every point is resolved, checked and rendered (pure) before any directory is written or any
point starts: a bad value in the last point is an error naming it before the first one runs.
Locally the points run one after another (`--parallel=N`: N at a time), each as the child
command that already runs such a directory (`packrun debug --resume POINT` or `packrun run
--resume POINT`), so supervision, signals and resume are exactly those of a single run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from launcher.core.errors import UserError
from launcher.core.log import STDERR, get_logger
from launcher.core.paths import REPO
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.names import JOB_JSON, LOGS
from launcher.core.spec import JobSpec, build_spec, read_job_file, spec_to_json

log = get_logger(__name__)

SWEEP_JSON = "sweep.json"
SWEEP_TABLE = "sweep"          # the job file's [sweep] table: key = [values]
ARRAY_SBATCH = "job_array.sbatch"
CONSOLE_LOG = f"{LOGS}/console.out"   # a point's console output when points run in parallel
SWEEP_FORMAT = 1
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
    from launcher.render.artifacts import render_artifacts

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
        from launcher.preflight.data import preflight
        preflight(spec)
    else:
        from launcher.preflight.checks import check_before_launch
        if how == "run" and spec.nodes != 1:
            raise UserError(f"nodes is {spec.nodes}: a local sweep starts the workers of this "
                            "machine; use --slurm for several nodes")
        check_before_launch(spec, slurm=how == "slurm")


def sweep_dir_path(base: JobSpec, stamp: str | None = None) -> Path:
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    return Path(base.output_dir).expanduser().resolve() / f"{base.name}-sweep-{stamp}"


def create_sweep_dir(planned: Path) -> Path:
    """Claim `planned` (or `planned-2`, ... when a sweep of the same second has it) with mkdir,
    as run directories are claimed."""
    try:
        planned.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as e:
        raise UserError(f"cannot create output directory {planned.parent} ({e.strerror}); set "
                        "output_dir to a writable directory") from None
    path, n = planned, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = planned.with_name(f"{planned.name}-{n}")
        except PermissionError:
            raise UserError(f"cannot create a sweep directory in {planned.parent}: permission "
                            "denied; set output_dir to a writable directory") from None


def write_sweep(plan: Plan) -> Path:
    """The sweep directory with sweep.json and every point's run directory (job.json and its
    rendered launch). Paths inside the artifacts were rendered for the planned directory name;
    when that name was taken (two sweeps in one second), render again for the one claimed."""
    from launcher.render.artifacts import render_artifacts

    sweep_dir = create_sweep_dir(plan.sweep_dir)
    rerender = sweep_dir != plan.sweep_dir
    for p, files in zip(plan.points, plan.artifacts):
        run_dir = sweep_dir / p.name
        (run_dir / LOGS).mkdir(parents=True)
        if rerender and files:
            files = render_artifacts(p.spec, run_dir, slurm=plan.how == "slurm")
        write_atomic(run_dir / JOB_JSON, spec_to_json(p.spec))
        for rel, text in files.items():
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(run_dir / rel, text, 0o755 if text.startswith("#!") else None)
    doc = {"format": SWEEP_FORMAT, "name": plan.base.name, "job": str(Path(plan.job).resolve()),
           "created": time.strftime("%Y-%m-%d %H:%M:%S"), "how": plan.how,
           "parallel": plan.parallel, "keys": plan.keys,
           "points": [{"index": p.index, "dir": p.name, "overrides": p.overrides,
                       "values": {k: getattr(p.spec, k) for k in plan.keys}}
                      for p in plan.points]}
    write_atomic(sweep_dir / SWEEP_JSON, json.dumps(doc, indent=2) + "\n")
    return sweep_dir


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


# ---------------------------------------------------------------------------------------------
# Running the points on this machine
# ---------------------------------------------------------------------------------------------

def point_command(how: str, run_dir: Path) -> list[str]:
    """The packrun command that runs one point's directory as a single run would."""
    cmd = "debug" if how == "debug" else "run"
    return [sys.executable, "-m", "launcher.cli.main", cmd, "--resume", str(run_dir)]


def run_local(sweep: dict, parallel: int) -> tuple[dict[int, int], int | None]:
    """Run the points, `parallel` at a time; ({index: exit status}, the signal that stopped
    the sweep or None). One at a time, a point's
    console is this console; several at a time, each point's goes to its logs/console.out and
    the console says when each starts and ends. Ctrl-C / SIGTERM stop every running point."""
    from launcher.supervise import processes

    env = dict(os.environ)
    repo = str(REPO)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    todo = list(sweep["points"])
    n = len(todo)
    running: dict[int, tuple[subprocess.Popen, float, IO[bytes] | None]] = {}
    results: dict[int, int] = {}
    procs: list[subprocess.Popen] = []
    with processes.forward_signals(procs) as got:
        while todo or running:
            while todo and len(running) < parallel and got["signal"] is None:
                p = todo.pop(0)
                log.info(f"packrun sweep: point {p['index'] + 1}/{n} {p['dir']} started")
                os.utime(p["path"] / JOB_JSON)  # a run's start time (packrun ls) is job.json's
                out: IO[bytes] | None = (None if parallel == 1
                                         else open(p["path"] / CONSOLE_LOG, "ab"))
                proc = processes.spawn(point_command(sweep["how"], p["path"]), env=env,
                                       stdout=out)
                procs.append(proc)
                running[p["index"]] = (proc, time.monotonic(), out)
            if got["signal"] is not None and not running:
                break
            for index, (proc, t0, out) in list(running.items()):
                if proc.poll() is None:
                    continue
                if out is not None:
                    out.close()
                rc = processes.exit_code(proc.returncode)
                results[index] = rc
                del running[index]
                point = sweep["points"][index]
                state = "finished" if rc == 0 else f"failed (exit {rc})"
                log.info(f"packrun sweep: point {index + 1}/{n} {point['dir']} {state} in "
                         f"{time.monotonic() - t0:.0f} s")
            time.sleep(0.2)
        if got["signal"] is not None:
            for p in todo:
                log.info(f"packrun sweep: point {p['index'] + 1}/{n} {p['dir']} not started "
                         "(stopped)")
    return results, got["signal"]


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def _how(launcher, workers, slurm: bool) -> tuple[str, dict]:
    cli = {}
    if launcher is not None:
        cli["launcher"] = launcher
    if workers is not None:
        cli["cards_per_node"] = workers
    if slurm:
        return "slurm", cli
    return ("run" if cli else "debug"), cli


def sweep_command(job: str | None, overrides: dict, grid_items: list[str],
                  points_file: str | None, *, launcher=None, workers=None,
                  parallel: int | None = None,
                  slurm: bool = False, wait: bool = False) -> int:
    """`packrun sweep`: plan (every point checked), write the sweep directory, run or submit."""
    how, extra = _how(launcher, workers, slurm)
    if wait and not slurm:
        raise UserError("--wait follows a Slurm job array: use it with --slurm (a local sweep "
                        "always runs to its end)")
    if job is None:
        raise UserError("give a job file: packrun sweep JOB --grid KEY=V1,V2 ...")
    plan = plan_sweep(job, {**overrides, **extra}, grid_items, points_file, how=how,
                      parallel=parallel)
    if how == "slurm":
        from launcher.sweep import array as sweep_slurm
        sweep_slurm.check_uniform(plan)
    sweep_dir = write_sweep(plan)
    sweep = read_sweep(sweep_dir)
    what = {"debug": "debug runs", "run": f"{plan.points[0].spec.launcher} launches",
            "slurm": "one Slurm job array"}[how]
    log.info(f"packrun sweep: {len(plan.points)} point(s) over {', '.join(plan.keys)} as {what}; "
             f"sweep directory {sweep_dir}")
    from launcher.sweep.report import summary_text
    if how == "slurm":
        from launcher.sweep import array as sweep_slurm
        sweep_slurm.write_array_script(plan, sweep_dir)
        job_id = sweep_slurm.submit_array(sweep_dir)
        log.info(f"packrun sweep: submitted Slurm job array {job_id} ({len(plan.points)} task(s), "
                 f"{plan.parallel} at a time); packrun ls {sweep_dir.parent} / "
                 f"packrun cancel {sweep_dir}")
        if not wait:
            return 0
        rc = sweep_slurm.follow_array(sweep_dir)
    else:
        results, stopped_by = run_local(sweep, plan.parallel)
        rc = 0 if len(results) == len(plan.points) and not any(results.values()) else 1
        if stopped_by is not None:
            rc = 128 + stopped_by
    print("\n" + summary_text(sweep_dir), flush=True)  # the result: also under --quiet
    return rc


def render_sweep_command(job: str, overrides: dict, grid_items: list[str],
                         points_file: str | None, *, slurm: bool = False,
                         parallel: int | None = None,
                         launcher=None, workers=None) -> str:
    """`packrun render --sweep`: the sweep directory with every point rendered; nothing starts.
    Returns what to run next."""
    how, extra = _how(launcher, workers, slurm)
    if how == "debug" and overrides.get("launcher"):
        how = "run"
    plan = plan_sweep(job, {**overrides, **extra}, grid_items, points_file, how=how,
                      parallel=parallel, check=False)
    if how == "slurm":
        from launcher.sweep import array as sweep_slurm
        sweep_slurm.check_uniform(plan)
    sweep_dir = write_sweep(plan)
    log.info(f"packrun: rendered sweep {sweep_dir}: {len(plan.points)} point(s) over "
             f"{', '.join(plan.keys)}", extra=STDERR)
    if how == "slurm":
        from launcher.sweep import array as sweep_slurm
        script = sweep_slurm.write_array_script(plan, sweep_dir)
        return f"sbatch {shlex.quote(str(script))}"
    return "\n".join("packrun " + shlex.join(point_command(how, sweep_dir / p.name)[3:])
                     for p in plan.points)
