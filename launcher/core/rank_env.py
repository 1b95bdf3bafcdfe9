"""A process's place in the job, read from the variables its launcher set. No MindSpore import:
the worker reads its own environment, the supervisor reads its workers' (/proc/PID/environ).

- msrun and packrun's mpirun-on-CPU path: MindSpore dynamic cluster, `MS_ROLE` = `MS_WORKER`
  (rank in `RANK_ID` / `MS_NODE_ID`, world in `MS_WORKER_NUM`) or `MS_SCHED` (the scheduler,
  which runs the worker script too but is no rank);
- the Ascend rank-table script: `RANK_TABLE_FILE`, `RANK_ID`, `RANK_SIZE`;
- Open MPI on GPU/Ascend: `OMPI_COMM_WORLD_RANK` / `OMPI_COMM_WORLD_SIZE`.
Nothing set: a single process, rank 0 of 1.
"""

from __future__ import annotations

import sys
from typing import Mapping

from launcher.core.paths import importable
from launcher.core.rundir.names import CONSOLE_TTY_ENV


def is_scheduler(env: Mapping[str, str]) -> bool:
    return env.get("MS_ROLE") == "MS_SCHED"


def rank_from_env(env: Mapping[str, str]) -> int | None:
    """The rank a launcher gave this process; None for MindSpore's scheduler process."""
    if is_scheduler(env):
        return None
    for var in ("RANK_ID", "MS_NODE_ID", "OMPI_COMM_WORLD_RANK"):
        if env.get(var, "").isdigit():
            return int(env[var])
    return 0


def started_as_rank(env: Mapping[str, str]) -> bool:
    """Whether a launcher gave this process its place (a rank, or the scheduler's role). A
    process forked by msrun but not yet exec'd still shows msrun's own command line and
    environment, which names no rank."""
    return any(env.get(var) for var in ("MS_ROLE", "RANK_ID", "MS_NODE_ID",
                                        "OMPI_COMM_WORLD_RANK"))


def world_from_env(env: Mapping[str, str]) -> int:
    for var in ("MS_WORKER_NUM", "RANK_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if env.get(var, "").isdigit():
            return int(env[var])
    return 1


def joins_a_collective(env: Mapping[str, str]) -> bool:
    """Whether this process must call MindSpore's init(): every dynamic-cluster process (the
    scheduler included), and any rank of a launch with more than one process."""
    return bool(env.get("MS_ROLE")) or world_from_env(env) > 1


def worker_env(base: dict | None = None) -> dict:
    """The environment a worker process gets: unbuffered output so logs are live, and the
    repository importable even without `pip install -e .`."""
    env = importable(base)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("GLOG_v", "3")  # MindSpore's C++ INFO/WARNING chatter off; errors still show
    env[CONSOLE_TTY_ENV] = "1" if sys.stdout.isatty() else "0"
    return env
