"""Where am I in a Slurm job? The Slurm variables of the current process, read in one place.

`SlurmEnvironment` is to packrun what Lightning's SLURMEnvironment is to Lightning: inside an
allocation (the batch script, or a task that srun started) it names the job, this task's ranks
and the allocation's hosts, the first of which runs MindSpore's scheduler. The host list comes
from `scontrol show hostnames`, as in job.sbatch, and from packrun's own hostlist expander
(launcher/core/hostlist.py) where scontrol is missing or fails.

No MindSpore import: this runs in launch scripts on every node.
"""

from __future__ import annotations

import functools
import os
import subprocess
from typing import Mapping

from launcher.core import hostlist as nodelist
from launcher.core.errors import UserError


class SlurmEnvironment:
    """The Slurm job this process runs in, from its environment (default: os.environ)."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self._env = dict(os.environ if env is None else env)

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        """True inside a Slurm job (batch script or srun task)."""
        return bool((os.environ if env is None else env).get("SLURM_JOB_ID"))

    # --- the variables ----------------------------------------------------------------------
    def _get(self, name: str, default: str | None = None) -> str:
        value = self._env.get(name, default)
        if value is None or value == "":
            raise UserError(f"{name} is not set: this is not running inside a Slurm job (submit "
                            "it with `packrun submit`, or start it with srun inside one)")
        return value

    def _int(self, name: str, default: str | None = None) -> int:
        value = self._get(name, default)
        try:
            return int(value)
        except ValueError:
            raise UserError(f"{name} is {value!r}; Slurm sets it to a number") from None

    @property
    def job_id(self) -> str:
        return self._get("SLURM_JOB_ID")

    @property
    def job_nodelist(self) -> str:
        """The allocation's hosts in Slurm hostlist syntax (`node[01-04]`)."""
        return self._get("SLURM_JOB_NODELIST", self._env.get("SLURM_NODELIST"))

    @property
    def num_nodes(self) -> int:
        return self._int("SLURM_JOB_NUM_NODES", self._env.get("SLURM_NNODES"))

    @property
    def node_rank(self) -> int:
        """This node's index in the allocation (0 on the first host)."""
        return self._int("SLURM_NODEID")

    @property
    def global_rank(self) -> int:
        """This task's rank in its srun step."""
        return self._int("SLURM_PROCID")

    @property
    def local_rank(self) -> int:
        """This task's index on its node."""
        return self._int("SLURM_LOCALID")

    @property
    def world_size(self) -> int:
        """Tasks in the srun step."""
        return self._int("SLURM_NTASKS")

    @property
    def restart_count(self) -> int:
        """How often the job was requeued (0 on its first run)."""
        return self._int("SLURM_RESTART_COUNT", "0")

    # --- hosts ------------------------------------------------------------------------------
    @functools.cached_property
    def hosts(self) -> list[str]:
        """The allocation's host names in node-rank order."""
        expr = self.job_nodelist
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", expr], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
        except (OSError, subprocess.SubprocessError):
            out = []
        return out or nodelist.expand(expr)

    @property
    def master_addr(self) -> str:
        """The first host: where MindSpore's scheduler listens."""
        return self.hosts[0]

