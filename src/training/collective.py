"""Small collectives outside the training graph: agreeing on a stop step, summing eval counts.

With one worker these are identities, so the single-card run is the same program.
"""

from __future__ import annotations

import numpy as np


def allreduce_sum(values, world: int) -> np.ndarray:
    """Element-wise sum of `values` over all ranks, as float32 (the only type MindSpore's CPU
    AllReduce takes; exact for counts below 2**24)."""
    arr = np.asarray(values, dtype=np.float32)
    if world <= 1:
        return arr
    import mindspore as ms
    from mindspore import ops
    return ops.AllReduce(ops.ReduceOp.SUM)(ms.Tensor(arr)).asnumpy()


def any_rank(flag: bool, world: int) -> bool:
    """True on every rank if it is true on any rank (all ranks must call this together)."""
    return bool(allreduce_sum([1 if flag else 0], world)[0] > 0)


def average_parameters(params, world: int) -> None:
    """Replace each parameter by its mean over all ranks, in one all-reduce. Used for BatchNorm
    moving statistics, which each rank accumulates from its own shard: averaged, every rank
    ends an epoch with identical weights and the main rank evaluates with all shards' stats."""
    params = list(params)
    if world <= 1 or not params:
        return
    import mindspore as ms
    flat = np.concatenate([p.asnumpy().ravel() for p in params])
    mean = allreduce_sum(flat, world) / world
    offset = 0
    for p in params:
        size = int(np.prod(p.shape))
        p.set_data(ms.Tensor(mean[offset:offset + size].reshape(p.shape), p.dtype))
        offset += size
