"""`packrun node-launch RUN_DIR`: start this node's share of a rendered run, from a user's own
Slurm script (`srun --ntasks-per-node=1 packrun node-launch RUN_DIR`) or by hand on each node.

The run is a `packrun render JOB --slurm` run directory (msrun): its msrun.sh takes the node rank
from SLURM_NODEID and the scheduler's address and port from MASTER_ADDR / MASTER_PORT, which
job.sbatch exports in packrun's own batch script and this module exports here:
  node rank    --node_rank, else SLURM_NODEID
  master       --master_addr, else the job's master_addr, else the allocation's first host
  port         --master_port, else the job's master_port, else 20000 + SLURM_JOB_ID % 20000
               (every node computes the same port without talking to the others)
SIGINT / SIGTERM stop this node's msrun and workers (TERM, then KILL); SIGUSR1 creates
RUN_DIR/preempt.requested, the stop-after-this-step request job.sbatch's batch program makes. The
exit status is msrun.sh's, or 128 + the signal that stopped it. Each node runs the stall
watchdog (launcher/supervise/watchdog.py) over every rank's progress record: on a stall it asks
this node's ranks for their stacks and stops this node's msrun (exit status 124).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.log import STDERR, get_logger
from launcher.core.rundir import attempts
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.lock import acquire
from launcher.core.rundir.names import (
    ATTEMPT_ENV,
    EXIT_REQUEUE,
    JOB_SBATCH,
    LAUNCH_SCRIPTS,
    PREEMPT_FLAG,
)
from launcher.core.spec import JobSpec
from launcher.slurm.env import SlurmEnvironment
from launcher.supervise import lifeline, restarts
from launcher.supervise.processes import exit_code, forward_signals, spawn, stop
from launcher.supervise.watchdog import Watchdog, watching

log = get_logger(__name__)

PORT_BASE = 20000  # derived ports: PORT_BASE .. 2 * PORT_BASE - 1


def check_run_dir(run_dir: Path, spec: JobSpec) -> None:
    if spec.launcher != "msrun" or not (run_dir / JOB_SBATCH).is_file():
        raise UserError(f"{run_dir} is not a Slurm-style msrun render; node-launch starts "
                        "msrun.sh of `packrun render JOB --slurm --launcher=msrun` (its msrun.sh "
                        "takes the node rank and master from the environment)")


def _int_flag(name: str, value) -> int:
    """A whole-number flag as fire hands it over (int, or the text as typed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        return int(value)
    raise UserError(f"--{name}={value!r}: give a whole number, e.g. --{name}=0")


def node_rank(spec: JobSpec, flag: int | None, slurm: SlurmEnvironment | None) -> int:
    if flag is None and slurm is None:
        raise UserError("not inside a Slurm job: give --node_rank (0 on the master node)")
    if slurm is not None and flag is None and slurm.local_rank != 0:
        raise UserError("more than one node-launch task on this node: start it with srun "
                        "--ntasks-per-node=1 (one task per node starts all its workers)")
    if flag is not None:
        rank = _int_flag("node_rank", flag)
    else:
        assert slurm is not None  # refused above
        rank = slurm.node_rank
    if not 0 <= rank < spec.nodes:
        raise UserError(f"node rank {rank} is outside 0..{spec.nodes - 1}: the run was rendered "
                        f"for nodes = {spec.nodes}; render it with --nodes matching the "
                        "allocation (#SBATCH --nodes)")
    return rank


def master_addr(spec: JobSpec, flag: str | None, slurm: SlurmEnvironment | None) -> str:
    if flag or spec.master_addr:
        return flag or spec.master_addr
    if slurm is None:
        raise UserError("not inside a Slurm job: give --master_addr (node 0's address)")
    return slurm.master_addr


def master_port(spec: JobSpec, flag: int | None, slurm: SlurmEnvironment | None) -> int:
    if flag or spec.master_port:
        port = _int_flag("master_port", flag) if flag else spec.master_port
        if not 1 <= port <= 65535:
            raise UserError(f"--master_port={port}: give a TCP port, 1..65535")
        return port
    if slurm is None:
        raise UserError("not inside a Slurm job: give --master_port (the same on every node)")
    try:
        return PORT_BASE + int(slurm.job_id) % PORT_BASE
    except ValueError:
        raise UserError(f"SLURM_JOB_ID is {slurm.job_id!r}; give --master_port") from None


def check_allocation(spec: JobSpec, slurm: SlurmEnvironment | None) -> None:
    if slurm is not None and slurm.num_nodes != spec.nodes:
        raise UserError(f"the Slurm job has {slurm.num_nodes} node(s) but the run was rendered "
                        f"for nodes = {spec.nodes}; render it with --nodes={slurm.num_nodes} or "
                        f"ask for #SBATCH --nodes={spec.nodes}")


def launch_env(rank: int, addr: str, port: int) -> dict[str, str]:
    return dict(os.environ, SLURM_NODEID=str(rank), MASTER_ADDR=addr, MASTER_PORT=str(port))


def run_node(run_dir: Path, env: dict[str, str], received: dict | None = None,
             watchdog: Watchdog | None = None) -> int:
    """Run msrun.sh with `env`, forwarding signals; its exit status (`received["signal"]`: the
    signal that stopped it, when `received` is given; `received["stall"]`: the stall
    `watchdog`'s Watching, which stopped it on a stall)."""
    script = run_dir / LAUNCH_SCRIPTS["msrun"]
    proc = spawn(["bash", str(script)], env=env, cwd=run_dir, stdout=None)
    old_usr1 = signal.signal(signal.SIGUSR1, lambda *_: (run_dir / PREEMPT_FLAG).touch())
    try:
        with forward_signals([proc]) as got, watching(watchdog, lambda: stop(proc)) as watch:
            proc.wait()
    finally:
        signal.signal(signal.SIGUSR1, old_usr1)
    if received is not None:
        received["signal"], received["stall"] = got["signal"], watch
    return 128 + got["signal"] if got["signal"] is not None else exit_code(proc.returncode)


def node_attempt(run_dir: Path, env: dict[str, str], attempt: int, world: int,
                 node: int) -> attempts.Result:
    """One start of this node's msrun.sh; how it ended (from the ranks' files on failure)."""
    if node == 0:
        (run_dir / PREEMPT_FLAG).unlink(missing_ok=True)
    received: dict = {}
    rc = run_node(run_dir, env | {ATTEMPT_ENV: str(attempt)}, received,
                  Watchdog.for_run(run_dir, attempt))
    if received["stall"].report is not None:
        return attempts.Result(**received["stall"].result_fields())
    if received.get("signal") is not None:
        return attempts.Result(rc, reason="stopped by a signal", user_stop=True)
    if rc in (0, EXIT_REQUEUE):
        return attempts.Result(rc)
    return attempts.result_from_files(run_dir, rc, world)


def own_files(spec: JobSpec, node: int):
    """This node's log files: its ranks' (and the scheduler's on node 0)."""
    mine = range(node * spec.cards_per_node, (node + 1) * spec.cards_per_node)
    pattern = re.compile(r"worker_(\d+)\.")

    def only(path: Path) -> bool:
        m = pattern.match(path.name)
        return int(m.group(1)) in mine if m else node == 0
    return only


def node_launch_command(run_dir: str, node_rank_flag: int | None = None,
                        master_addr_flag: str | None = None,
                        master_port_flag: int | None = None) -> int:
    path = Path(run_dir).resolve()
    spec = spec_from_json(path)
    check_run_dir(path, spec)
    slurm = SlurmEnvironment() if SlurmEnvironment.detect() else None
    check_allocation(spec, slurm)
    rank = node_rank(spec, node_rank_flag, slurm)
    addr = master_addr(spec, master_addr_flag, slurm)
    port = master_port(spec, master_port_flag, slurm)
    with acquire(path, "packrun node-launch", rank) as lock, lifeline.hold(lock, path):
        allowed = attempts.max_restarts(spec, "node-launch")
        log.info(f"packrun: node-launch {path}: node {rank} of {spec.nodes}, scheduler "
                 f"{addr}:{port}" + (f"; up to {allowed} restart(s)" if allowed else ""),
                 extra=STDERR)
        world, env = spec.nodes * spec.cards_per_node, launch_env(rank, addr, port)
        # every node restarts its own msrun (they meet again at the same scheduler port); node 0
        # keeps the run's state and failure reports, each node archives its own logs
        return restarts.with_restarts(
            path, "node-launch", world, allowed,
            lambda attempt: node_attempt(path, env, attempt, world, rank),
            only=own_files(spec, rank), record=rank == 0)
