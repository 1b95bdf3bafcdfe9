"""Device sets: the `devices` job key and `--devices` flag ("0-7", "0,1", "0-3,6") as sorted ids.

Pure; the job spec validates `devices` with it, rank tables and checks read it.
"""

from __future__ import annotations

import re

from launcher.core.errors import UserError

MAX_DEVICE_ID = 15  # a server has at most 16 Ascend devices (ids 0..15)


def parse_devices(value, what: str = "--devices") -> list[int]:
    """Device ids from "0-7", "0,1", "0-3,6", an int, or a tuple/list (what fire makes of
    `--devices=0,1`); sorted. Duplicates, ids outside 0..15 and an empty set are errors, named
    as `what` (the flag, or the job key)."""
    if isinstance(value, bool):
        raise UserError(f"{what}={value!r}: give device ids such as 0-7 or 0,1")
    if isinstance(value, int):
        items = [str(value)]
    elif isinstance(value, (tuple, list)):
        items = [str(v) for v in value]
    else:
        items = [s.strip() for s in str(value).split(",")]
    devices: list[int] = []
    for item in items:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise UserError(f"{what}: {item!r} is not a device id or range; write e.g. 0-7, "
                            "0,1 or 0-3,6")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"{what}: range {item} runs backwards; write {hi}-{lo}")
        for d in range(lo, hi + 1):
            if d > MAX_DEVICE_ID:
                raise UserError(f"{what}: device {d} is out of range; Ascend device ids are "
                                f"0..{MAX_DEVICE_ID}")
            if d in devices:
                raise UserError(f"{what}: device {d} is listed twice")
            devices.append(d)
    if not devices:
        raise UserError(f"{what}: the device set is empty; give ids such as 0-7 or 0,1")
    return sorted(devices)


# Ascend's gres/npu plugin for Slurm (slurm-atlas-plugin, src/plugins/gres/npu/gres_npu.c)
# exports the allocated cards as comma-separated device numbers: ASCEND_VISIBLE_DEVICES (and
# NPU_DEVICE_ORDINAL) beside SLURM_JOB_NPUS (the job's environment) or SLURM_STEP_NPUS (a step's).
GRES_NPU_VARS = ("SLURM_JOB_NPUS", "SLURM_STEP_NPUS")
GRES_NPU_VISIBLE = "ASCEND_VISIBLE_DEVICES"


def gres_npus(env) -> list[int] | None:
    """The cards Slurm's gres/npu plugin allocated to this node (ASCEND_VISIBLE_DEVICES, when
    the plugin also set SLURM_JOB_NPUS or SLURM_STEP_NPUS), in the plugin's order; None when it
    did not run."""
    if not any(env.get(v) for v in GRES_NPU_VARS) or not env.get(GRES_NPU_VISIBLE, "").strip():
        return None
    value = env[GRES_NPU_VISIBLE].strip()
    ids = [s.strip() for s in value.split(",")]
    if not all(re.fullmatch(r"\d+", i) for i in ids):
        raise UserError(f"{GRES_NPU_VISIBLE}={value!r} (Slurm's gres/npu): not a list of card "
                        "numbers such as 0,1,2,3")
    return [int(i) for i in ids]
