"""Who am I in the job? Rank and world size from the launcher's environment, and the one call
that joins the collective.

- msrun and packrun's mpirun-on-CPU path start workers as MindSpore dynamic-cluster processes
  (`MS_ROLE=MS_WORKER`, `MS_WORKER_NUM`, ...);
- the Ascend rank-table script exports `RANK_TABLE_FILE`, `RANK_ID`, `RANK_SIZE`, `DEVICE_ID`.
With neither, the run is a single process: world size 1 is the same program, not another one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mindspore as ms


@dataclass(frozen=True)
class Parallel:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size(env=os.environ) -> int:
    if env.get("MS_ROLE"):
        return int(env.get("MS_WORKER_NUM", "1"))
    if env.get("RANK_TABLE_FILE"):
        return int(env.get("RANK_SIZE", "1"))
    return 1


def init_parallel(env=os.environ) -> Parallel:
    """Join the collective when launched as part of one (data parallel, gradients averaged)."""
    if launched_world_size(env) <= 1 and not env.get("MS_ROLE"):
        return Parallel()
    from mindspore.communication import get_group_size, get_rank, init
    init()
    world = get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=world)
    return Parallel(rank=get_rank(), world=world)
