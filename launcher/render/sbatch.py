"""A Slurm job's `#SBATCH` options as data: built once from the spec, printed by job.sbatch.j2,
and reused by a sweep's job array (launcher/sweep/array.py), which asks for the same resources
as each of its points. Pure: no file is read or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from launcher.core.spec import JobSpec

# The options a job array sets for itself instead of taking them from its points.
PER_JOB = ("job-name", "output")


class SbatchOption(NamedTuple):
    """`#SBATCH --NAME=VALUE`, or `#SBATCH --NAME` when `value` is None (a flag)."""
    name: str
    value: str | None = None

    def line(self) -> str:
        return f"#SBATCH --{self.name}" + ("" if self.value is None else f"={self.value}")


def whole_node(spec: JobSpec) -> bool:
    """A node's cards, cores and memory are the job's (GPU, Ascend): --exclusive --mem=0."""
    return spec.device != "CPU"


def cpus_per_task(spec: JobSpec) -> int:
    """--cpus-per-task of the job and of its srun step; 0: not set (the step gets every core of
    its node)."""
    return spec.cpus_per_task or (0 if whole_node(spec) else spec.cards_per_node)


def gres(spec: JobSpec) -> str:
    return spec.gres or (f"gpu:{spec.cards_per_node}" if spec.device == "GPU" else "")


def sbatch_options(spec: JobSpec, run_dir: str | Path) -> list[SbatchOption]:
    """packrun's own #SBATCH options of the job, in the order job.sbatch prints them (the site's
    `sbatch_extra` lines are not among them: they are verbatim text, printed after these).
    Values are plain text; the template passes each through the `sbatch` filter."""
    o = SbatchOption
    options = [o("job-name", spec.name), o("nodes", str(spec.nodes)), o("ntasks-per-node", "1")]
    if cpus_per_task(spec):
        options.append(o("cpus-per-task", str(cpus_per_task(spec))))
    if whole_node(spec):
        options += [o("exclusive"), o("mem", "0")]
    for name, value in (("gres", gres(spec)), ("nodelist", spec.hosts),
                        ("partition", spec.partition), ("account", spec.account),
                        ("qos", spec.qos), ("time", spec.time)):
        if value:
            options.append(o(name, value))
    options.append(o("output", f"{run_dir}/slurm-%j.out"))
    if spec.signal_before_s:
        options.append(o("signal", f"B:USR1@{spec.signal_before_s}"))
    options.append(o("requeue" if spec.requeue else "no-requeue"))
    return options
