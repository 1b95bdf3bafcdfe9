"""The core split (launcher/core/cores.py): one contiguous, NUMA-local range per local rank."""

import json
import subprocess
import sys

import pytest

from launcher.core.cores import (
    format_cpulist,
    msrun_bind,
    msrun_can_bind,
    parse_cpulist,
    physical_devices,
    split_cores,
)
from launcher.core.errors import UserError

pytestmark = pytest.mark.unit

TWO_SOCKETS = {0: list(range(0, 96)), 1: list(range(96, 192))}


def test_192_cores_over_8_ranks_on_2_numa_nodes():
    split = split_cores(range(192), TWO_SOCKETS, 8)
    assert [format_cpulist(c) for c in split] == [f"{24 * i}-{24 * i + 23}" for i in range(8)]
    for rank, cores in enumerate(split):  # ranks 0-3 on node 0, 4-7 on node 1
        node = 0 if rank < 4 else 1
        assert set(cores) <= set(TWO_SOCKETS[node])


def test_interleaved_numa_numbering_keeps_each_range_on_one_node():
    numa = {0: [c for c in range(16) if c % 2 == 0], 1: [c for c in range(16) if c % 2]}
    split = split_cores(range(16), numa, 4)
    assert split == [[0, 2, 4, 6], [8, 10, 12, 14], [1, 3, 5, 7], [9, 11, 13, 15]]


def test_an_affinity_mask_with_holes():
    mask = [c for c in range(32) if c not in (3, 4, 17)]   # 29 cores
    split = split_cores(mask, {}, 4)
    assert [len(c) for c in split] == [7] * 4
    assert [format_cpulist(c) for c in split] == ["0-2,5-8", "9-15", "16,18-23", "24-30"]
    flat = [c for cores in split for c in cores]
    assert len(flat) == len(set(flat)) and set(flat) <= set(mask)


def test_a_range_crosses_nodes_only_when_no_node_holds_it():
    split = split_cores(range(20), {0: list(range(10)), 1: list(range(10, 20))}, 3)
    assert split == [[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15], [6, 7, 8, 9, 16, 17]]


def test_one_rank_per_core():
    assert split_cores([0, 1], {0: [0, 1]}, 2) == [[0], [1]]


def test_fewer_cores_than_ranks_is_a_clear_error():
    with pytest.raises(UserError, match=r"8 local ranks but only 4 core\(s\) available "
                                        r"\(0-3\).*cpus_per_task.*bind_cores = false"):
        split_cores(range(4), {}, 8)


def test_cpulists_round_trip():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert format_cpulist([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    with pytest.raises(ValueError):
        parse_cpulist("0-3;8")


def test_msrun_bind_dictionary_follows_the_visible_devices():
    split = split_cores(range(192), TWO_SOCKETS, 4)
    devices = physical_devices(4, {"ASCEND_RT_VISIBLE_DEVICES": "7,6,5,4"}, "Ascend")
    assert msrun_bind(split, devices) == {"device4": ["0-47"], "device5": ["48-95"],
                                          "device6": ["96-143"], "device7": ["144-191"]}
    assert physical_devices(2, {"ASCEND_RT_VISIBLE_DEVICES": "4,5"}, "GPU") == [0, 1]
    holes = msrun_bind([[0, 1, 3]], [0])
    assert holes == {"device0": ["0-1", "3"]}  # msrun takes "A-B" or "A,B" items


def test_msrun_binds_only_where_it_can_read_the_cpuset(tmp_path, monkeypatch):
    from launcher.core import cores
    assert cores.msrun_has_bind_core()  # MindSpore 2.10's msrun
    cpuset = tmp_path / "cpuset.cpus"
    assert not msrun_can_bind([[0], [1]], cpuset)  # cgroup v2: the file msrun reads is absent
    cpuset.write_text("0-1\n")
    assert msrun_can_bind([[0], [1]], cpuset)
    assert not msrun_can_bind([[0], [2]], cpuset)
    monkeypatch.setattr(cores, "msrun_has_bind_core", lambda: False)  # an older msrun
    assert not msrun_can_bind([[0], [1]], cpuset)


def test_the_launch_time_command(tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "launcher.node", "cores", *a],
                              capture_output=True, text=True, timeout=60)
    ok = run("1")
    assert ok.returncode == 0 and parse_cpulist(ok.stdout.strip())
    per = run("1", "--per")
    assert int(per.stdout) == len(parse_cpulist(ok.stdout.strip()))
    msrun = run("1", "--msrun")
    assert msrun.returncode == 0 and (msrun.stdout == "" or "device0" in json.loads(msrun.stdout))
    both = run("1", "--with-msrun")   # msrun.sh's one call: the two answers, one per line
    assert both.returncode == 0 and both.stdout == ok.stdout + msrun.stdout
    bad = run("4096")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "4096 local ranks but only" in bad.stderr
