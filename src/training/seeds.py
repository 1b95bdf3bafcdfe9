"""The 32-bit seeds MindSpore takes, derived from the job's seed (any size the spec allows).

`ms.set_seed` and `ds.config.set_seed` accept 0..2**32-1 only; the job key `seed` is any
non-negative 64-bit integer, and the per-epoch / per-view streams are derived by hashing
(numpy's SeedSequence), so no seed or epoch can overflow and distinct streams do not collide
the way `seed * K + epoch` arithmetic does. No MindSpore import: pure numpy.
"""

from __future__ import annotations

import numpy as np

UINT32 = 2 ** 32


def derived_seed(seed: int, *stream: int) -> int:
    """A seed in 0..2**32-1 for the stream `stream` (e.g. (EPOCH, epoch)) of the job's seed."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, np.uint32)[0])


def network_seed(seed: int) -> int:
    """The seed for ms.set_seed: the job's own seed when it fits (as before), else derived."""
    return seed if seed < UINT32 else derived_seed(seed, 0)


# stream tags (first word after the job's seed)
EPOCH, VIEW = 1, 2
