"""Launch artifacts for a job: msrun / rank-table / mpirun scripts, rank table, hostfile, sbatch.

Pure: `render_artifacts` turns a spec into {path in the run directory: text}; `write_run_dir`
creates a run directory, writes job.json and the artifacts, and returns the command to run next.
Nothing is started, so a render is the dry run of a launch. Every value a script needs is
computed here; the templates (templates/*.j2, or a site's template_dir first) only lay them out.
Spec text is shell-quoted everywhere except the site lines (env_setup, sbatch_extra), which
templates/site_setup.sh.j2 and job.sbatch.j2 render verbatim in one marked block.

Artifacts by launcher (all scripts bash; paths relative to the run directory):
  msrun       msrun.sh (one node's share; node rank from $1 or $SLURM_NODEID), bin/python
  rank_table  rank_table.sh (one process per card; server index from $1), rank_table.json
  mpirun      mpirun.sh, hostfile, and on CPU mpi_task.sh (maps Open MPI ranks onto MindSpore's
              dynamic-cluster variables; mpirun.sh starts the scheduler)
  --slurm     job.sbatch (srun starts msrun.sh on every node); msrun only
"""

from __future__ import annotations

import shlex
import socket
import sys
from pathlib import Path

import jinja2

from launcher import nodelist, ranktable
from launcher.attempts import max_restarts
from launcher.errors import UserError
from launcher.rundir import create_run_dir, write_atomic
from launcher.runfiles import JOB_JSON, template_names
from launcher.spec import JobSpec, load_job, spec_to_json

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
WORKER = "src/train.py"  # run as `<python> <repo>/src/train.py <RUN_DIR>`
# A free TCP port, picked by the launch script on the host where the scheduler will listen.
FREE_PORT = ("\"$PYTHON\" -c 'import socket; s = socket.socket(); s.bind((\"\", 0)); "
             "print(s.getsockname()[1])'")
HCCL_TIMEOUT_RANGE = (120, 7200)  # HCCL_CONNECT_TIMEOUT accepts no less and no more


def template_dirs(template_dir: str = "") -> list[Path]:
    """Where templates are looked up, first match wins: the site's template_dir, then packrun's."""
    if not template_dir:
        return [TEMPLATES]
    if not Path(template_dir).is_dir():
        raise UserError(f"key 'template_dir': {template_dir} is not a directory; give a directory "
                        "holding templates (packrun templates --copy NAME DIR starts one), or "
                        "template_dir = \"\"")
    return [Path(template_dir), TEMPLATES]


def _environment(template_dir: str = "") -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dirs(template_dir)),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env


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
        if any(c.isspace() for c in str(run_dir)):
            raise UserError(f"run directory {run_dir} contains a space, which #SBATCH --output "
                            "cannot hold; choose an output_dir (--out) without spaces")
    if multi and spec.launcher == "msrun" and spec.master_port == 0:
        raise UserError(f"master_port = 0 picks a free port when one script starts every node "
                        f"(one node, Slurm, mpirun); the {spec.nodes} nodes here start one by "
                        "one, so set master_port to a port free on node 0, e.g. 8118")
    if multi and spec.launcher in ("mpirun", "rank_table") and not hosts:
        what = "the hostfile" if spec.launcher == "mpirun" else "the rank table's server ids"
        raise UserError(f"nodes = {spec.nodes} with launcher {spec.launcher!r}: set hosts (the "
                        f"nodes in rank order, e.g. \"10.0.0.[1-{spec.nodes}]\") for {what}")


def _launch_env(spec: JobSpec) -> dict[str, str]:
    """Variables every launch script exports for its workers, after the site block (the job's
    `env_setup` and `env`), so that these win."""
    if spec.device == "Ascend":
        lo, hi = HCCL_TIMEOUT_RANGE
        return {"HCCL_CONNECT_TIMEOUT": str(min(max(spec.cluster_timeout, lo), hi))}
    return {}


def _rank_table(spec: JobSpec, hosts: list[str]) -> dict:
    cards = list(range(spec.cards_per_node))
    if spec.device_ips:
        ips = ranktable.split_ips(spec.device_ips)
        want = spec.nodes * spec.cards_per_node
        if len(ips) != want:
            raise UserError(f"key 'device_ips' has {len(ips)} address(es); {spec.nodes} node(s) "
                            f"x {spec.cards_per_node} card(s) need {want}, node by node")
    elif spec.nodes == 1:
        ips = ranktable.ips_for_devices(cards, ranktable.read_hccn_conf(spec.hccn_conf),
                                        spec.hccn_conf)
    else:
        raise UserError(f"key 'device_ips' is needed for a rank table over {spec.nodes} nodes "
                        f"(hccn_conf describes one server): list every node's "
                        f"{spec.cards_per_node} device IPs, node by node; or write the table "
                        "with `packrun rank-table` / `packrun merge-rank-tables`")
    servers = hosts or [_local_ip()]  # (several nodes always have hosts: see _check)
    k = spec.cards_per_node
    return ranktable.build_rank_table(
        [(host, list(zip(cards, ips[i * k:(i + 1) * k]))) for i, host in enumerate(servers)])


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
                     python: str = sys.executable, repo: str | Path = REPO) -> dict[str, str]:
    """{path relative to the run directory: text} for every artifact the launch needs (job.json
    excluded). `python` and `repo` are the interpreter and checkout the workers run."""
    run_dir = Path(run_dir)
    hosts = _hosts(spec)
    _check(spec, hosts, slurm, run_dir)
    world = spec.nodes * spec.cards_per_node
    ctx = dict(name=spec.name, device=spec.device, nodes=spec.nodes, cards=spec.cards_per_node,
               world=world, run_dir=str(run_dir), python=str(python),
               worker=str(Path(repo) / WORKER), repo=str(repo), slurm=slurm,
               master_addr=_master_addr(spec, hosts, slurm), master_port=spec.master_port,
               cluster_timeout=spec.cluster_timeout, env=_launch_env(spec), free_port=FREE_PORT,
               env_setup=spec.env_setup, site_env=spec.env)
    templates = _environment(spec.template_dir)
    out: dict[str, str] = {}
    if spec.launcher == "msrun":
        out["msrun.sh"] = templates.get_template("msrun.sh.j2").render(ctx)
        out["bin/python"] = templates.get_template("python_shim.j2").render(ctx)
        if slurm:
            gres = spec.gres or (f"gpu:{spec.cards_per_node}" if spec.device == "GPU" else "")
            out["job.sbatch"] = templates.get_template("job.sbatch.j2").render(
                ctx, nodelist=spec.hosts, gres=gres, partition=spec.partition,
                account=spec.account, qos=spec.qos, time=spec.time, requeue=spec.requeue,
                cpus_per_task=spec.cpus_per_task or spec.cards_per_node,
                signal_before_s=spec.signal_before_s, sbatch_extra=spec.sbatch_extra,
                files=template_names(), max_restarts=max_restarts(spec, "slurm"))
    elif spec.launcher == "rank_table":
        out["rank_table.sh"] = templates.get_template("rank_table.sh.j2").render(ctx)
        out["rank_table.json"] = ranktable.to_json(_rank_table(spec, hosts))
    else:
        cpu = spec.device == "CPU"
        mpi_vars = ["MS_SCHED_HOST", "MS_SCHED_PORT", "MS_WORKER_NUM", "MS_TOPO_TIMEOUT"]
        out["mpirun.sh"] = templates.get_template("mpirun.sh.j2").render(
            ctx, cpu=cpu, exports=["PATH", *ctx["env"], *spec.env, *(mpi_vars if cpu else [])])
        out["hostfile"] = templates.get_template("hostfile.j2").render(
            ctx, hosts=hosts or ["localhost"])
        if cpu:
            out["mpi_task.sh"] = templates.get_template("mpi_task.sh.j2").render(ctx)
    return out


def next_command(spec: JobSpec, run_dir: Path, slurm: bool) -> str:
    """The one command that starts the rendered launch (with a comment where it runs)."""
    d = Path(run_dir)
    if slurm:
        return f"sbatch {shlex.quote(str(d / 'job.sbatch'))}"
    script = shlex.quote(str(d / f"{spec.launcher}.sh"))
    if spec.nodes == 1:
        return f"bash {script}"
    if spec.launcher == "mpirun":
        return f"bash {script}   # on {_master_addr(spec, _hosts(spec), slurm)}, the first host"
    arg = "NODE_RANK" if spec.launcher == "msrun" else "SERVER_INDEX"
    return (f"bash {script} {arg}   # on every node, {arg} 0..{spec.nodes - 1} in the order of "
            "hosts (0 on the master)")


def write_run_dir(spec: JobSpec, *, slurm: bool = False, out: str | None = None,
                  python: str = sys.executable, repo: str | Path = REPO) -> tuple[Path, str]:
    """Render into a new run directory: job.json plus the artifacts, scripts executable.
    Returns (run directory, the command to run next)."""
    run_dir = create_run_dir(spec, out)
    try:
        artifacts = render_artifacts(spec, run_dir, slurm=slurm, python=python, repo=repo)
    except UserError:  # leave no empty run directory behind
        (run_dir / "logs").rmdir()
        run_dir.rmdir()
        raise
    write_atomic(run_dir / JOB_JSON, spec_to_json(spec))
    for rel, text in artifacts.items():
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, 0o755 if text.startswith("#!") else None)
    return run_dir, next_command(spec, run_dir, slurm)


def render_command(job: str, overrides: dict, *, slurm: bool = False, out: str | None = None,
                   print_only: bool = False) -> None:
    """`packrun render`: write a run directory and print the next command, or with --print
    show the artifacts instead of writing them."""
    spec = load_job(job, overrides)
    if print_only:
        run_dir = (Path(out if out is not None else spec.output_dir).resolve()
                   / f"{spec.name}-YYYYmmdd-HHMMSS")
        files = {JOB_JSON: spec_to_json(spec)} | render_artifacts(spec, run_dir, slurm=slurm)
        for rel, text in files.items():
            print(f"==> {run_dir / rel} <==\n{text}")
        return
    run_dir, command = write_run_dir(spec, slurm=slurm, out=out)
    print(f"packrun: rendered {run_dir}", file=sys.stderr)
    print(command)
