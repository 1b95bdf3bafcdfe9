"""Launch artifacts for a job: msrun / rank-table / mpirun scripts, rank table, hostfile, sbatch.

Pure: `render_artifacts` turns a spec into {path in the run directory: text}; `write_run_dir`
creates a run directory, writes job.json and the artifacts, and returns the command to run next.
Nothing is started, so a render is the dry run of a launch. Every value a script needs is
computed here; the templates (templates/*.j2, or a site's template_dir first) only lay them out.
Spec text is shell-quoted everywhere except the site lines (env_setup, sbatch_extra), which
templates/site_setup.sh.j2 and job.sbatch.j2 render verbatim in one marked block; every value a
template writes passes launcher/render/shellsafe.py (quoted, or a word that is inert in a script).

Artifacts by launcher (all scripts bash; paths relative to the run directory):
  msrun       msrun.sh (one node's share; node rank from $1 or $SLURM_NODEID), bin/python
  rank_table  rank_table.sh (one process per card; server index from $1), rank_table.json
  mpirun      mpirun.sh, hostfile, and on CPU mpi_task.sh (maps Open MPI ranks onto MindSpore's
              dynamic-cluster variables; mpirun.sh starts the scheduler)
  --slurm     job.sbatch (srun starts msrun.sh on every node); msrun only
"""

from __future__ import annotations

import json
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

import jinja2

from launcher.core import hostlist as nodelist
from launcher.core.errors import EXIT_USER_ERROR, UserError
from launcher.core.log import STDERR, get_logger
from launcher.core.paths import REPO, TEMPLATES, WORKER_SCRIPT
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.attempts import max_restarts
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.rundir.layout import create_run_dir
from launcher.core.rundir.names import (
    EXIT_REQUEUE,
    JOB_JSON,
    JOB_SBATCH,
    LAUNCH_SCRIPTS,
    LOGS,
    RANK_TABLE_JSON,
    RUN_LOCK,
    template_names,
)
from launcher.core.spec import JobSpec, WrongKind, load_job, path_problems, wrong_kind
from launcher.render import ranktable, shellsafe
from launcher.render import sbatch as slurm_options

log = get_logger(__name__)

WORKER = str(WORKER_SCRIPT.relative_to(REPO))  # run as `<python> <repo>/src/train.py <RUN_DIR>`
# A free TCP port, picked by the launch script on the host where the scheduler will listen.
FREE_PORT = ("\"$PYTHON\" -c 'import socket; s = socket.socket(); s.bind((\"\", 0)); "
             "print(s.getsockname()[1])'")
HCCL_TIMEOUT_RANGE = (120, 7200)  # HCCL_CONNECT_TIMEOUT accepts no less and no more
CLUSTER_TIMEOUT_TOGETHER = 60   # cluster_timeout = 0 where every node starts at once
CLUSTER_TIMEOUT_BY_HAND = 600   # ... and where each node's script is started by hand (msrun's)
VISIBLE_DEVICES = {"Ascend": "ASCEND_RT_VISIBLE_DEVICES", "GPU": "CUDA_VISIBLE_DEVICES"}


def template_dirs(template_dir: str = "") -> list[Path]:
    """Where templates are looked up, first match wins: the site's template_dir, then packrun's."""
    if not template_dir:
        return [TEMPLATES]
    if not Path(template_dir).is_dir():
        raise UserError(f"key 'template_dir': {template_dir} is not a directory; give a directory "
                        "holding templates (packrun templates --copy NAME DIR starts one), or "
                        "template_dir = \"\"")
    return [Path(template_dir), TEMPLATES]


def environment(template_dir: str = "") -> jinja2.Environment:
    """The Jinja environment every launch template is rendered in: the site's template_dir
    first, every value through the shellsafe guard (launcher/render/shellsafe.py)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dirs(template_dir)),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             finalize=shellsafe.finalize)
    env.filters.update(shellsafe.FILTERS)
    return env


def render_template(env: jinja2.Environment, template: str, /, *args, **kwargs) -> str:
    """Template `template` rendered with the variables given (one of them may be `name`). A
    site's copy that no longer fits this packrun (copied by an older one: it includes a template
    or uses a variable this packrun does not have) is one UserError naming the file and the fix,
    before anything is written."""
    try:
        return env.get_template(template).render(*args, **kwargs)
    except jinja2.TemplateNotFound as e:
        what = f"includes {e.name}, which this packrun does not have"
    except jinja2.UndefinedError as e:
        what = f"uses a variable this packrun does not pass ({e.message})"
    except jinja2.TemplateSyntaxError as e:
        what = f"line {e.lineno}: {e.message}"
    assert env.loader is not None
    _, where, _ = env.loader.get_source(env, template)
    raise UserError(f"template {where} {what}: it was written for another packrun version; "
                    f"start again from `packrun templates --copy {template} DIR` and re-apply the "
                    "site's changes") from None


# ---------------------------------------------------------------------------------------------
# Checks and derived values
# ---------------------------------------------------------------------------------------------

def _hosts(spec: JobSpec) -> list[str]:
    if not spec.hosts:
        return []
    hosts = nodelist.expand(spec.hosts)
    dup = next((h for i, h in enumerate(hosts) if h in hosts[:i]), None)
    if dup:
        raise UserError(f"key 'hosts': {dup} is listed twice; list each node once")
    if len(hosts) != spec.nodes:
        raise UserError(f"key 'hosts' names {len(hosts)} node(s) but nodes = {spec.nodes}; "
                        "give one host per node, in node-rank order")
    return hosts


def _master_addr(spec: JobSpec, hosts: list[str], slurm: bool) -> str:
    """The scheduler's address; "" under Slurm means: the allocation's first node, found by
    job.sbatch at run time."""
    if spec.master_addr or slurm:
        return spec.master_addr
    if spec.nodes == 1:
        return "127.0.0.1"
    if hosts:
        return hosts[0]
    raise UserError(f"nodes = {spec.nodes} without Slurm: set master_addr (the address of node "
                    "0) or hosts (all nodes in rank order)")


def _check(spec: JobSpec, hosts: list[str], slurm: bool, run_dir: Path):
    multi = spec.nodes > 1 and not slurm
    if slurm and spec.launcher != "msrun":
        raise UserError(f"--slurm starts msrun on every node (srun); launcher is "
                        f"{spec.launcher!r}. Use --launcher=msrun, or drop --slurm.")
    if slurm:
        for name in ("partition", "account", "qos", "gres"):
            if any(c.isspace() for c in getattr(spec, name)):
                raise UserError(f"key '{name}' is {getattr(spec, name)!r}; Slurm values hold no "
                                "spaces")
        bad = shellsafe.SBATCH_BAD.search(str(run_dir))
        if bad:
            what = "a space" if bad.group().isspace() else repr(bad.group())
            raise UserError(f"run directory {run_dir} contains {what}, which #SBATCH --output "
                            "cannot hold; choose an output_dir (--out) without spaces, quotes, "
                            "backslashes or '#'")
    if multi and spec.launcher == "msrun" and spec.master_port == 0:
        raise UserError(f"master_port = 0 picks a free port when one script starts every node "
                        f"(one node, Slurm, mpirun); the {spec.nodes} nodes here start one by "
                        "one, so set master_port to a port free on node 0, e.g. 8118")
    if multi and spec.launcher in ("mpirun", "rank_table") and not hosts and not (
            spec.launcher == "rank_table" and spec.rank_table_file):  # the table names them
        what = "the hostfile" if spec.launcher == "mpirun" else "the rank table's server ids"
        raise UserError(f"nodes = {spec.nodes} with launcher {spec.launcher!r}: set hosts (the "
                        f"nodes in rank order, e.g. \"10.0.0.[1-{spec.nodes}]\") for {what}")


def cluster_timeout(spec: JobSpec, slurm: bool) -> int:
    """The job's cluster_timeout, or when 0 (auto): short where one command starts every node
    at once (one machine, Slurm, mpirun), msrun's own 600 s where a person starts a script on
    each node by hand."""
    if spec.cluster_timeout:
        return spec.cluster_timeout
    by_hand = spec.nodes > 1 and not slurm and spec.launcher != "mpirun"
    return CLUSTER_TIMEOUT_BY_HAND if by_hand else CLUSTER_TIMEOUT_TOGETHER


# The heartbeat interval bounds of MindSpore's dynamic cluster (seconds; its default 3 and 5) and
# the largest world that gets them at 1 s.
HEARTBEAT_VARS = frozenset({"MS_RETRY_INTERVAL_LOWER", "MS_RETRY_INTERVAL_UPPER"})
HEARTBEAT_FAST_MAX_WORLD = 64


def _launch_env(spec: JobSpec, timeout: int, devices: list[int] | None) -> dict[str, str]:
    """Variables every launch script exports for its workers, after the site block (the job's
    `env_setup` and `env`), so that these win."""
    env: dict[str, str] = {}
    if spec.nodes * spec.cards_per_node <= HEARTBEAT_FAST_MAX_WORLD and not (
            HEARTBEAT_VARS & set(spec.env)):
        # MindSpore's cluster learns that it has formed, and a process may exit, only at a
        # heartbeat; its default of one every 3 to 5 s costs a small job up to 5 s at the start
        # and 5 s at the end of every attempt. Once a second is nothing to the scheduler at
        # this size; bigger clusters keep MindSpore's spread (docs/launching.md).
        env |= {var: "1" for var in sorted(HEARTBEAT_VARS)}
    if spec.device == "Ascend":
        lo, hi = HCCL_TIMEOUT_RANGE
        env["HCCL_CONNECT_TIMEOUT"] = str(min(max(timeout, lo), hi))
        env["HCCL_EXEC_TIMEOUT"] = str(spec.collective_timeout)
    if devices is not None and spec.launcher != "rank_table":  # rank tables name the cards
        env[VISIBLE_DEVICES[spec.device]] = ",".join(map(str, devices))
    return env


def node_devices(spec: JobSpec, table: list | None) -> list[int] | None:
    """The cards each node uses (key devices, or an existing rank table's); None = 0..K-1."""
    devices = None
    if spec.devices:
        devices = ranktable.parse_devices(spec.devices, "key 'devices'")
    if table is not None:
        sets = {tuple(d for d, _ in sorted(entries)) for _, entries in table}
        listed = sorted(sets)[0]
        if spec.launcher == "msrun" and len(sets) > 1:
            raise UserError(f"rank_table_file {spec.rank_table_file}: its servers use different "
                            "cards; msrun starts the same cards on every node (use launcher = "
                            "\"rank_table\")")
        if devices is not None and len(sets) == 1 and list(listed) != devices:
            raise UserError(f"key 'devices' is {spec.devices!r} but rank_table_file "
                            f"{spec.rank_table_file} lists cards {','.join(map(str, listed))}; "
                            "drop devices or make them agree")
        if devices is None and list(listed) != list(range(spec.cards_per_node)):
            devices = list(listed)
    return devices


def _existing_table(spec: JobSpec, master: str) -> tuple[str, list] | None:
    """(text, per-server [(device_id, rank_id)]) of the job's rank_table_file, validated."""
    if not spec.rank_table_file:
        return None
    try:
        with open(spec.rank_table_file, encoding="utf-8", newline="") as f:
            text = f.read()  # newline="": copied byte for byte
    except OSError as e:
        raise UserError(f"key 'rank_table_file': {spec.rank_table_file}: cannot read it "
                        f"({e.strerror or e.__class__.__name__})") from None
    except UnicodeDecodeError:
        raise UserError(f"rank_table_file {spec.rank_table_file}: not a UTF-8 JSON file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"rank_table_file {spec.rank_table_file}: not a JSON rank table "
                        f"({e})") from None
    servers = ranktable.validate_table(doc, spec.rank_table_file, spec.nodes,
                                       spec.cards_per_node, master if spec.nodes > 1 else "",
                                       spec.rank_table_version)
    return text, servers


def _rank_table(spec: JobSpec, hosts: list[str], devices: list[int] | None) -> dict:
    cards = devices if devices is not None else list(range(spec.cards_per_node))
    default = spec.hccn_conf == JobSpec.fields()["hccn_conf"].default  # not set by the job
    ip_lists = ranktable.device_ip_lists(cards, spec.nodes, None if default else spec.hccn_conf,
                                         spec.device_ips or None, "key 'device_ips'")
    servers = hosts or [_local_ip()]  # (several nodes always have hosts: see _check)
    return ranktable.build_rank_table(
        [(host, list(zip(cards, ip_lists[i]))) for i, host in enumerate(servers)])


def _server_slots(table: dict | list, k: int) -> tuple[list[int], list[int]]:
    """DEVICE_IDs and RANK_IDs of every server's ranks, server after server (rank_table.sh)."""
    if isinstance(table, dict):
        table = [(s["server_id"], [(int(d["device_id"]), int(d["rank_id"])) for d in s["device"]])
                 for s in table["server_list"]]
    device_ids = [d for _, entries in table for d, _ in entries]
    rank_ids = [r for _, entries in table for _, r in entries]
    return device_ids, rank_ids


def _local_ip() -> str:
    """One node without `hosts`: this machine's address, detected as hccl_tools.py does."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        raise UserError("cannot find this server's IP address for the rank table; set hosts to "
                        "it (e.g. --hosts=192.168.1.10)") from None


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def render_artifacts(spec: JobSpec, run_dir: str | Path, *, slurm: bool = False,
                     python: str = sys.executable, repo: str | Path = REPO,
                     warn=None) -> dict[str, str]:
    """{path relative to the run directory: text} for every artifact the launch needs (job.json
    excluded). `python` and `repo` are the interpreter and checkout the workers run.
    With `warn` (a callable), a missing hccn.conf is a warning and rank_table.json is left out
    (to be written on the server: `packrun rank-table`); without, it is an error."""
    run_dir = Path(run_dir)
    hosts = _hosts(spec)
    _check(spec, hosts, slurm, run_dir)
    world = spec.nodes * spec.cards_per_node
    # (HCCL rank tables have no scheduler: rank_table.sh needs no master)
    master_addr = "" if spec.launcher == "rank_table" else _master_addr(spec, hosts, slurm)
    existing = _existing_table(spec, master_addr)
    devices = node_devices(spec, existing[1] if existing else None)
    timeout = cluster_timeout(spec, slurm)
    ctx: dict[str, Any]
    ctx = dict(name=spec.name, device=spec.device, nodes=spec.nodes, cards=spec.cards_per_node,
               world=world, run_dir=str(run_dir), python=str(python),
               worker=str(Path(repo) / WORKER), repo=str(repo), slurm=slurm,
               master_addr=master_addr, master_port=spec.master_port,
               cluster_timeout=timeout, env=_launch_env(spec, timeout, devices),
               free_port=shellsafe.verbatim(FREE_PORT),
               env_setup=[shellsafe.verbatim(line) for line in spec.env_setup],
               site_env=spec.env,
               bind_cores=spec.bind_cores, rank_table_file=bool(existing),
               node_checks=spec.node_checks != "off",
               multi_node=spec.nodes > 1, exit_requeue=EXIT_REQUEUE,
               files=template_names())
    templates = environment(spec.template_dir)
    out: dict[str, str] = {}
    if existing and (spec.launcher == "rank_table" or spec.device == "Ascend"):
        out[RANK_TABLE_JSON] = existing[0]
    if spec.launcher == "msrun":
        ctx["rank_table_file"] = RANK_TABLE_JSON in out
        out[LAUNCH_SCRIPTS["msrun"]] = render_template(templates, "msrun.sh.j2", ctx)
        out["bin/python"] = render_template(templates, "python_shim.j2", ctx)
        if slurm:
            # (nodelist ... exit_user_error: the single values, for site templates written
            # before sbatch_options)
            out[JOB_SBATCH] = render_template(
                templates, "job.sbatch.j2", ctx,
                sbatch_options=slurm_options.sbatch_options(spec, run_dir),
                sbatch_extra=[shellsafe.verbatim(option) for option in spec.sbatch_extra],
                requeue=spec.requeue, cpus_per_task=slurm_options.cpus_per_task(spec),
                signal_before_s=spec.signal_before_s, max_restarts=max_restarts(spec, "slurm"),
                nodelist=shellsafe.sbatch(spec.hosts), gres=slurm_options.gres(spec),
                partition=spec.partition, account=spec.account, qos=spec.qos, time=spec.time,
                exclusive=slurm_options.whole_node(spec), run_lock=RUN_LOCK,
                exit_user_error=EXIT_USER_ERROR)
    elif spec.launcher == "rank_table":
        if not existing and spec.rank_table_version == "1.2":
            # (a super pod's ids come from each server's own npu-smi: not known when rendering)
            text = ("rank_table_version = \"1.2\": each server writes its part from its own "
                    "npu-smi (packrun rank-table --rank_table_version=1.2 --server_ip=IP "
                    "--out=part.json), packrun merge-rank-tables joins them")
            if warn is None:
                raise UserError(f"{text}; give the merged table as rank_table_file")
            warn(f"{text}; rank_table.json is not rendered: write it as RUN_DIR/rank_table.json "
                 "before the launch")
        elif not existing:
            try:
                out[RANK_TABLE_JSON] = ranktable.to_json(_rank_table(spec, hosts, devices))
            except UserError as e:
                if warn is None or spec.device_ips or Path(spec.hccn_conf).exists():
                    raise
                wrong = wrong_kind(spec.hccn_conf, "file")
                if wrong:  # not missing here but wrong: wrong where the job runs too
                    raise UserError(f"hccn_conf {spec.hccn_conf} {wrong}; set hccn_conf to the "
                                    "server's hccn.conf (or give device_ips)") from None
                warn(f"{e}; rank_table.json is not rendered: write it on the server before the "
                     "launch (packrun rank-table, see the command below)")
        if existing:
            table: dict | list = existing[1]
        elif RANK_TABLE_JSON in out:
            table = json.loads(out[RANK_TABLE_JSON])
        else:  # (not rendered: the slots the table will have, from the devices)
            cards = devices if devices is not None else list(range(spec.cards_per_node))
            table = [(host, [(d, i * len(cards) + j) for j, d in enumerate(cards)])
                     for i, host in enumerate(hosts or ["this server"])]
        device_ids, rank_ids = _server_slots(table, spec.cards_per_node)
        out[LAUNCH_SCRIPTS["rank_table"]] = render_template(
            templates, "rank_table.sh.j2", ctx, device_ids=device_ids, rank_ids=rank_ids)
    else:
        cpu = spec.device == "CPU"
        mpi_vars = ["MS_SCHED_HOST", "MS_SCHED_PORT", "MS_WORKER_NUM", "MS_TOPO_TIMEOUT"]
        out[LAUNCH_SCRIPTS["mpirun"]] = render_template(
            templates, "mpirun.sh.j2", ctx, cpu=cpu,
            exports=["PATH", *ctx["env"], *spec.env, *(mpi_vars if cpu else [])])
        out["hostfile"] = render_template(templates, "hostfile.j2", ctx,
                                          hosts=hosts or ["localhost"])
        out["mpi_task.sh"] = render_template(templates, "mpi_task.sh.j2", ctx, cpu=cpu)
    return out


def next_command(spec: JobSpec, run_dir: Path, slurm: bool, rank_table: bool = True) -> str:
    """The one command that starts the rendered launch (with a comment where it runs);
    `rank_table` False: rank_table.json is still to be written (no hccn.conf at render time)."""
    d = Path(run_dir)
    if slurm:
        return f"sbatch {shlex.quote(str(d / JOB_SBATCH))}"
    script = shlex.quote(str(d / f"{spec.launcher}.sh"))
    if spec.launcher == "rank_table" and not rank_table and spec.rank_table_version == "1.2":
        table = shlex.quote(str(d / RANK_TABLE_JSON))
        return (f"packrun rank-table --rank_table_version=1.2 --devices=0-"
                f"{spec.cards_per_node - 1} --server_ip=IP --out=part_N.json   # on every "
                f"server; then packrun merge-rank-tables part_*.json --out={table} && bash "
                f"{shlex.quote(str(d / LAUNCH_SCRIPTS['rank_table']))} N   # on every server")
    if spec.launcher == "rank_table" and not rank_table:
        table = shlex.quote(str(d / RANK_TABLE_JSON))
        return (f"packrun rank-table --devices=0-{spec.cards_per_node - 1} --out={table} && "
                f"bash {script}   # on the server (hccn.conf there)")
    if spec.nodes == 1:
        return f"bash {script}"
    if spec.launcher == "mpirun":
        return f"bash {script}   # on {_master_addr(spec, _hosts(spec), slurm)}, the first host"
    arg = "NODE_RANK" if spec.launcher == "msrun" else "SERVER_INDEX"
    return (f"bash {script} {arg}   # on every node, {arg} 0..{spec.nodes - 1} in the order of "
            "hosts (0 on the master)")


def write_run_dir(spec: JobSpec, *, slurm: bool = False, out: str | None = None,
                  python: str = sys.executable, repo: str | Path = REPO,
                  warn=None) -> tuple[Path, str]:
    """Render into a new run directory: job.json plus the artifacts, scripts executable.
    Returns (run directory, the command to run next). `warn`: see render_artifacts."""
    run_dir = create_run_dir(spec, out)
    try:
        artifacts = render_artifacts(spec, run_dir, slurm=slurm, python=python, repo=repo,
                                     warn=warn)
    except UserError:  # leave no empty run directory behind
        (run_dir / LOGS).rmdir()
        run_dir.rmdir()
        raise
    write_atomic(run_dir / JOB_JSON, spec_to_json(spec))
    for rel, text in artifacts.items():
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, 0o755 if text.startswith("#!") else None)
    return run_dir, next_command(spec, run_dir, slurm, RANK_TABLE_JSON in artifacts)


def render_command(job: str, overrides: dict, *, slurm: bool = False, out: str | None = None,
                   print_only: bool = False) -> None:
    """`packrun render`: write a run directory and print the next command, or with --print
    show the artifacts instead of writing them. Inputs the launch reads but the render does not
    (data folders, checkpoint, hccn.conf) may be missing here: warnings, not errors, since
    the data of a cluster job often lives only where it runs; run, debug and submit refuse."""
    def warn(text: str) -> None:
        log.warning(f"packrun: warning: {text}")

    spec = load_job(job, overrides, check_paths=False)
    for problem in path_problems(spec, str(job)):
        if isinstance(problem, WrongKind):
            raise problem  # wrong wherever the job runs
        warn(f"{problem} (rendered anyway; it must exist where the job runs)")
    if print_only:
        run_dir = (Path(out if out is not None else spec.output_dir).resolve()
                   / f"{spec.name}-YYYYmmdd-HHMMSS")
        files = {JOB_JSON: spec_to_json(spec)} | render_artifacts(spec, run_dir, slurm=slurm,
                                                                  warn=warn)
        for rel, text in files.items():
            print(f"==> {run_dir / rel} <==\n{text}")
        return
    run_dir, command = write_run_dir(spec, slurm=slurm, out=out, warn=warn)
    log.info(f"packrun: rendered {run_dir}", extra=STDERR)
    print(command)
