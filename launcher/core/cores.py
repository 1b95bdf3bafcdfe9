"""Core binding: each local rank gets its own contiguous, NUMA-local range of the cores the
launch may use, `cores // local ranks` each (the Model Zoo's run_distribute_train.sh split, made
NUMA-aware and tolerant of holes in the mask).

`split_cores` is pure. The launch scripts call this module when they start (only then are the
cores known: the Slurm allocation, or the launching process's own affinity mask):

    python -m launcher.node cores N            one line: N cpulists separated by spaces
                                          (rank_table.sh: taskset -c; msrun.sh's fallback)
    python -m launcher.node cores N --per      cores per rank (mpirun.sh: --map-by slot:PE=K)
    python -m launcher.node cores N --msrun    msrun's --bind_core JSON ({"device0": [...]}),
                                          or nothing when msrun cannot apply it here (its reader
                                          needs cgroup v1's cpuset file and taskset)
    python -m launcher.node cores N --with-msrun
                                          both in one start (msrun.sh): the cpulists' line,
                                          then the JSON line when msrun can apply it

A bad mask (fewer cores than ranks) exits 2 with one line naming the counts and the fix.
No MindSpore import.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from launcher.core.errors import UserError
from launcher.core.rundir.names import CORES_ENV

NUMA_ROOT = Path("/sys/devices/system/node")
# What msrun 2.10 reads as "available cpus" (mindspore/runtime/thread_bind_core.py); without it
# msrun ignores --bind_core.
MSRUN_CPUSET = Path("/sys/fs/cgroup/cpuset/cpuset.cpus")


def parse_cpulist(text: str) -> list[int]:
    """ "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11] (the kernel's cpulist format)."""
    cores: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"not a cpulist: {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        cores.update(range(lo, hi + 1))
    return sorted(cores)


def segments(cores: Sequence[int]) -> list[str]:
    """[0, 1, 2, 5] -> ["0-2", "5"]: runs of consecutive ids."""
    out: list[str] = []
    cores = sorted(cores)
    i = 0
    while i < len(cores):
        j = i
        while j + 1 < len(cores) and cores[j + 1] == cores[j] + 1:
            j += 1
        out.append(str(cores[i]) if i == j else f"{cores[i]}-{cores[j]}")
        i = j + 1
    return out


def format_cpulist(cores: Sequence[int]) -> str:
    return ",".join(segments(cores))


def split_cores(cores: Sequence[int], numa: Mapping[int, Sequence[int]],
                ranks: int) -> list[list[int]]:
    """One core list per local rank: `len(cores) // ranks` cores each, consecutive in the
    available set, inside one NUMA node wherever the node has room (ranks fill node 0 first,
    then node 1, ..., as cards 0-3 / 4-7 sit on a 2-socket server); what no node can hold
    whole is taken from the nodes' remainders in order. Cores left over stay unused.
    `numa` maps node -> its cores ({}, or a map missing some of `cores`: one node)."""
    available = sorted(set(cores))
    if ranks < 1:
        raise UserError(f"cannot split cores over {ranks} ranks")
    per = len(available) // ranks
    if per == 0:
        raise UserError(f"{ranks} local ranks but only {len(available)} core(s) available "
                        f"({format_cpulist(available) or 'none'}): binding needs at least one "
                        "core per rank; give the launch more cores (Slurm: cpus_per_task), "
                        "fewer workers (cards_per_node), or bind_cores = false")
    node_of = {c: n for n, node_cores in numa.items() for c in node_cores}
    if any(c not in node_of for c in available):  # a map that does not describe these cores
        node_of = {}
    by_node: dict[int, list[int]] = {}
    for c in available:
        by_node.setdefault(node_of.get(c, -1), []).append(c)
    chunks: list[list[int]] = []
    remainder: list[int] = []
    for node in sorted(by_node):
        node_cores = by_node[node]
        whole = len(node_cores) // per
        chunks += [node_cores[i * per:(i + 1) * per] for i in range(whole)]
        remainder += node_cores[whole * per:]
    while len(chunks) < ranks:  # ranks no node holds whole: across nodes, in order
        chunks.append(remainder[:per])
        remainder = remainder[per:]
    return chunks[:ranks]


def numa_nodes(root: Path = NUMA_ROOT) -> dict[int, list[int]]:
    """NUMA node -> its cores, from sysfs; {} where the machine does not say."""
    nodes = {}
    for p in sorted(root.glob("node[0-9]*")):
        try:
            nodes[int(p.name[4:])] = parse_cpulist((p / "cpulist").read_text())
        except (OSError, ValueError):
            continue
    return nodes


def available_cores(env: Mapping[str, str] = os.environ) -> list[int]:
    """The cores this launch may use: $PACKRUN_CORES (a cpulist: a site reserving cores, or a
    test posing as a bigger machine) if set, else the process's affinity mask (Slurm's
    task/affinity and task/cgroup plugins set it to the allocation). Where Slurm reports fewer
    CPUs for the task than the mask holds (no confinement: task/none), the first that many."""
    if env.get(CORES_ENV, "").strip():
        try:
            return parse_cpulist(env[CORES_ENV])
        except ValueError:
            raise UserError(f"{CORES_ENV}={env[CORES_ENV]!r} is not a cpulist (e.g. 0-23,48-71)"
                            ) from None
    cores = sorted(os.sched_getaffinity(0))
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        n = env.get(var, "")
        if env.get("SLURM_JOB_ID") and n.isdigit() and 0 < int(n) < len(cores):
            return cores[:int(n)]
    return cores


def physical_devices(ranks: int, env: Mapping[str, str] = os.environ,
                     device: str = "") -> list[int]:
    """The device id msrun keys each local rank's --bind_core entry by: the visible device list
    (ASCEND_RT_VISIBLE_DEVICES, on Ascend) sorted, else 0..ranks-1."""
    visible = env.get("ASCEND_RT_VISIBLE_DEVICES", "").strip() if device == "Ascend" else ""
    if visible:
        ids = sorted(int(v) for v in visible.split(",") if v.strip())
        if len(ids) >= ranks:
            return ids[:ranks]
    return list(range(ranks))


def msrun_bind(split: Sequence[Sequence[int]], devices: Sequence[int]) -> dict[str, list[str]]:
    """msrun's --bind_core dictionary for `split`: {"device<id>": [segments]} in rank order."""
    return {f"device{d}": segments(c) for d, c in zip(devices, split)}


def msrun_has_bind_core() -> bool:
    """Whether the installed msrun takes --bind_core (MindSpore 2.3 on; older ones would reject
    the flag), read from its source without importing MindSpore."""
    import importlib.util
    spec = importlib.util.find_spec("mindspore")
    if spec is None or not spec.origin:
        return False
    try:
        return '"--bind_core"' in (Path(spec.origin).parent / "parallel" / "cluster" /
                                   "run.py").read_text(encoding="utf-8")
    except OSError:
        return False


def msrun_can_bind(split: Sequence[Sequence[int]], cpuset: Path = MSRUN_CPUSET) -> bool:
    """Whether msrun applies a --bind_core dictionary here: the installed msrun has the flag,
    taskset exists, and MindSpore 2.10's reader finds the usable cores in cgroup v1's cpuset
    file (absent under cgroup v2) and every core of the split among them."""
    if shutil.which("taskset") is None or not msrun_has_bind_core():
        return False
    try:
        usable = set(parse_cpulist(cpuset.read_text()))
    except (OSError, ValueError):
        return False
    return bool(usable) and all(c in usable for chunk in split for c in chunk)


