"""`npu-smi` output, parsed without depending on column widths (newer npu-smi versions widen the
table and add columns).

`npu-smi info` prints two '|'-framed tables: the cards (two rows per chip: `NPU Name | Health |
...` then `Chip [Phy-ID] | Bus-Id | ...`; Atlas A3 shows two chips per NPU, each with its
`Phy-ID`, the device id HCCL and ASCEND_RT_VISIBLE_DEVICES use) and the processes (`NPU Chip |
Process id | Process name | Process memory(MB)`, one row per process and chip, names may be
empty, a card without any says `No running processes found in NPU N`). Old versions (21.0.x)
print no process table at all. `npu-smi info -t health|spod-info -i N -c C` print `Key : value`
lines; `npu-smi info -m` a whitespace table `NPU ID  Chip ID  Chip Logic ID  Chip Name`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

HEALTHY = "OK"
# What npu-smi prints instead of a table when it cannot reach the driver (e.g. in a container
# without the devices mounted: "dcmi model initialized failed, because the device is used.").
FAILURE_LINES = re.compile(r"^.*(?:dcmi model initialized failed|"
                           r"Invalid card id|[Pp]ermission denied|not found).*$", re.M)


@dataclass(frozen=True)
class Chip:
    npu: int           # the NPU (card) id npu-smi counts by
    chip: int          # the chip of that NPU (0; 0 and 1 on Atlas A3)
    device: int        # the device id (Phy-ID where npu-smi shows one, else the NPU id)
    name: str
    health: str
    bus_id: str = ""


@dataclass(frozen=True)
class Process:
    npu: int
    chip: int
    pid: int
    name: str          # "" where npu-smi shows none (containers, Atlas A3)
    memory_mb: str = ""


@dataclass
class Info:
    version: str = ""
    chips: list[Chip] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    has_process_table: bool = False   # False: this npu-smi lists no processes (21.0.x)
    idle_npus: set[int] = field(default_factory=set)  # "No running processes found in NPU N"

    def device_of(self, npu: int, chip: int) -> int | None:
        """The device id of chip `chip` of NPU `npu`, as the card table maps them."""
        for c in self.chips:
            if c.npu == npu and c.chip == chip:
                return c.device
        return None

    def chip_of(self, device: int) -> Chip | None:
        return next((c for c in self.chips if c.device == device), None)

    def holders(self, device: int) -> list[Process]:
        """The processes npu-smi lists on device `device` (each pid once)."""
        seen, out = set(), []
        for p in self.processes:
            if self.device_of(p.npu, p.chip) == device and p.pid not in seen:
                seen.add(p.pid)
                out.append(p)
        return out


class ParseError(ValueError):
    """The text is not an `npu-smi info` table (the first offending line is in the message)."""


def _cells(line: str) -> list[str] | None:
    """The cells of a '|'-framed row, stripped; None for frame lines (+----+, +====+)."""
    s = line.strip()
    if not s.startswith("|"):
        return None
    return [c.strip() for c in s.strip("|").split("|")]


def _int(token: str) -> int | None:
    return int(token) if re.fullmatch(r"\d+", token) else None


def failure_text(text: str) -> str:
    """The line of npu-smi's output that says it could not read the cards, or ""."""
    m = FAILURE_LINES.search(text)
    return m.group(0).strip() if m else ""


def parse_info(text: str) -> Info:
    """`npu-smi info` (the whole output). Raises ParseError when no card table is found."""
    info = Info()
    section = ""          # "cards" | "processes"
    pending: tuple[int, str, str] | None = None   # (npu, name, health) of a chip's first row
    proc_cols: dict[str, int] = {}
    for line in text.splitlines():
        cells = _cells(line)
        if cells is None:
            continue
        joined = " ".join(cells)
        m = re.search(r"npu-smi\s+(\S+)", joined)
        if m and not section:
            info.version = m.group(1)
            continue
        if "Health" in cells[1:2] or (len(cells) > 1 and cells[1].startswith("Health")):
            section = "cards"
            continue
        if len(cells) > 1 and cells[0].startswith("Chip") and section == "cards" \
                and pending is None:
            continue  # the second header row (Chip [Phy-ID] | Bus-Id | ...)
        if any(c.startswith("Process id") for c in cells):
            section = "processes"
            info.has_process_table = True
            for i, c in enumerate(cells):
                for key in ("Process id", "Process name", "Process memory"):
                    if c.startswith(key) and key not in proc_cols:
                        proc_cols[key] = i
            continue
        idle = re.fullmatch(r"No running processes found in NPU (\d+)", joined.strip())
        if idle:
            info.has_process_table = True
            info.idle_npus.add(int(idle.group(1)))
            continue
        if section == "cards":
            first = cells[0].split()
            if pending is None:
                npu = _int(first[0]) if first else None
                if npu is None or len(cells) < 2:
                    raise ParseError(f"npu-smi info: unexpected card row {line.strip()!r}")
                pending = (npu, " ".join(first[1:]), cells[1].split()[0] if cells[1] else "")
            else:
                npu, name, health = pending
                pending = None
                chip = _int(first[0]) if first else None
                if chip is None:
                    raise ParseError(f"npu-smi info: unexpected chip row {line.strip()!r}")
                phy = _int(first[1]) if len(first) > 1 else None
                info.chips.append(Chip(npu, chip, phy if phy is not None else npu, name, health,
                                       cells[1] if len(cells) > 1 else ""))
        elif section == "processes":
            first = cells[0].split()
            npu = _int(first[0]) if first else None
            chip = _int(first[1]) if len(first) > 1 else 0
            pid_at = proc_cols.get("Process id", 1)
            pid = _int(cells[pid_at]) if len(cells) > pid_at else None
            if npu is None or pid is None:
                raise ParseError(f"npu-smi info: unexpected process row {line.strip()!r}")
            name_at, mem_at = proc_cols.get("Process name", 2), proc_cols.get("Process memory", 3)
            info.processes.append(Process(
                npu, chip if chip is not None else 0, pid,
                cells[name_at] if len(cells) > name_at else "",
                cells[mem_at] if len(cells) > mem_at else ""))
    if not info.chips:
        raise ParseError("npu-smi info printed no card table")
    return info


def parse_fields(text: str) -> dict[str, str]:
    """`Key : value` lines (`npu-smi info -t health|spod-info|board ...`): {key: value}; a line
    that starts with ':' continues the previous value (the error information of -t health)."""
    out: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith(":") and last:
            out[last] += "; " + s[1:].strip()
            continue
        key, sep, value = s.partition(":")
        if sep and key.strip():
            last = key.strip()
            out[last] = value.strip()
    return out


@dataclass(frozen=True)
class Health:
    status: str
    error_code: str = ""
    error_information: str = ""

    @property
    def ok(self) -> bool:
        return self.status == HEALTHY


def parse_health(text: str) -> Health:
    """`npu-smi info -t health -i N -c C`: Health Status, Error Code, Error Information."""
    f = parse_fields(text)
    if "Health Status" not in f:
        raise ParseError("npu-smi info -t health printed no 'Health Status'")
    return Health(f["Health Status"], f.get("Error Code", ""), f.get("Error Information", ""))


@dataclass(frozen=True)
class SuperPod:
    sdid: str              # the chip's id in the super pod (rank table super_device_id)
    super_pod_id: str      # the super pod's physical id (rank table super_pod_id)
    super_pod_size: str = ""
    server_index: str = ""


def parse_spod_info(text: str) -> SuperPod | None:
    """`npu-smi info -t spod-info -i N -c C`; None when it names no super pod (AI Server mode:
    no SDID / Super Pod ID)."""
    f = parse_fields(text)
    sdid, pod = f.get("SDID", ""), f.get("Super Pod ID", "")
    if not re.fullmatch(r"\d+", sdid) or not pod:
        return None
    return SuperPod(sdid, pod, f.get("Super Pod Size", ""), f.get("Server Index", ""))


def parse_chip_map(text: str) -> dict[int, tuple[int, int]]:
    """`npu-smi info -m`: {chip logic id (the device id): (NPU id, chip id)}; rows whose logic id
    is not a number (an MCU) are left out."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 3 and all(re.fullmatch(r"\d+", t) for t in tokens[:3]):
            out[int(tokens[2])] = (int(tokens[0]), int(tokens[1]))
    return out
