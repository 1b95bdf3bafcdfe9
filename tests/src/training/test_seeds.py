"""Seeds (src/training/seeds.py): a job seed of any size gives 32-bit streams (MindSpore and numpy
take no more), one per purpose and epoch, the same in every process."""

import pytest

from src.training.seeds import EPOCH, UINT32, VIEW, derived_seed, network_seed

pytestmark = pytest.mark.unit


def test_seeds_of_any_size_give_32_bit_streams():
    for seed in (0, 42949, 2 ** 32, 2 ** 63 - 1):
        for epoch in (0, 1, 10 ** 6):
            assert 0 <= derived_seed(seed, EPOCH, epoch) < UINT32
        assert 0 <= network_seed(seed) < UINT32
    assert network_seed(7) == 7  # small seeds keep their meaning for ms.set_seed
    assert derived_seed(1, EPOCH, 1) != derived_seed(1, EPOCH, 2)
    # seeds 2**32 apart are different seeds (no wrap-around to 32 bits before deriving)
    assert derived_seed(2 ** 32, EPOCH, 1) != derived_seed(0, EPOCH, 1)
    assert network_seed(2 ** 32) != network_seed(0)


def test_a_stream_is_the_same_in_every_process_and_on_every_host():
    """Ranks on other hosts and a resumed run derive the same epoch order from the job's seed:
    the value is fixed (numpy's SeedSequence), not one of this process."""
    assert derived_seed(1, EPOCH, 1) == 1639030180
    assert derived_seed(1, VIEW, 1) != derived_seed(1, EPOCH, 1)  # the streams are distinct
