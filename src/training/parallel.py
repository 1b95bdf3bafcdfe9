"""The one call that joins the collective, when the launcher started this process as one rank
of many (launcher/core/rank_env.py reads the launcher's variables). World size 1 is the same
program, not another one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms

from launcher.core import rank_env as ranks
from src.training import cluster_wake


@dataclass(frozen=True)
class Parallel:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_parallel(env=os.environ, run_dir: Path | None = None) -> Parallel:
    """Join the collective when launched as part of one (data parallel, gradients averaged).
    With `run_dir`, the processes of the cluster wake each other from MindSpore's fixed sleeps
    (src/training/cluster_wake.py)."""
    if not ranks.joins_a_collective(env):
        return Parallel()
    from mindspore.communication import get_group_size, get_rank, init
    if run_dir is not None:
        cluster_wake.prepare()
        if ranks.is_scheduler(env):  # its init() returns only when the cluster has ended
            cluster_wake.wake_scheduler_when_workers_leave(run_dir)
    init()
    if run_dir is not None:
        cluster_wake.wake_peers(run_dir)
    world = get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=world)
    return Parallel(rank=get_rank(), world=world)
