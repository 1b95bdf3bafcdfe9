"""HCCL rank tables of version "1.0" (AI Server mode) and "1.2" (Atlas A3 super-pod mode),
checked as HCCL's docs and its parser (topoinfo_ranktableParser.cc) check them, and the 1.2 table
built the way Ascend's generator (mind-cluster ascend-operator, ranktable/v1dot2) builds it.

    {"status": "completed", "version": "1.2", "server_count": "2",
     "server_list": [{"server_id": "node_0", "host_ip": "172.16.0.100",
                      "device": [{"device_id": "0", "super_device_id": "0",
                                  "device_ip": "192.168.1.6", "rank_id": "0"}, ...]}, ...],
     "super_pod_list": [{"super_pod_id": "0", "server_list": [{"server_id": "node_0"}, ...]}]}

Every value is a string (HCCL: "... is not string!"); `super_device_id` (the SDID of `npu-smi
info -t spod-info`) is on every device or on none (none: AI Server mode), unique in its super pod;
`super_pod_list` and `super_pod_id` (npu-smi's "Super Pod ID", or a name of one's own) come
together. Version "2.0" (Ascend 950: rank_list, numbers) is another format: refused by name.
Pure: no file is read here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Sequence

VERSIONS = ("1.0", "1.2")
SERVER_ID_MAX = 64      # HCCL: a string of at most 64 characters
DEVICE_ID_MAX = 15


class TableError(ValueError):
    """What is wrong with a rank table: `where` (server / device) and the text."""

    def __init__(self, where: str, text: str):
        super().__init__(f"{where}{text}")
        self.where, self.text = where, text


@dataclass(frozen=True)
class Device:
    device_id: int
    rank_id: int
    device_ip: str = ""
    super_device_id: str = ""


@dataclass(frozen=True)
class Server:
    server_id: str
    devices: tuple[Device, ...]
    host_ip: str = ""
    super_pod_id: str = ""


@dataclass(frozen=True)
class Table:
    version: str
    servers: tuple[Server, ...]
    super_pods: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def world(self) -> int:
        return sum(len(s.devices) for s in self.servers)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _string(obj: dict, name: str, where: str, required: bool = True) -> str:
    if name not in obj:
        if required:
            raise TableError(where, f"field '{name}' is missing")
        return ""
    value = obj[name]
    if not isinstance(value, str):
        raise TableError(where, f"field '{name}' is {value!r}, not a string; HCCL reads every "
                         f"value of a version 1.x table as a string (\"{value}\")")
    if required and not value:
        raise TableError(where, f"field '{name}' is empty")
    return value


def _number(obj: dict, name: str, where: str) -> int:
    value = _string(obj, name, where)
    if not re.fullmatch(r"\d+", value):
        raise TableError(where, f"field '{name}' is {value!r}, not a whole number")
    return int(value)


def check(doc, max_device_id: int = DEVICE_ID_MAX) -> Table:
    """The table `doc` (parsed JSON) as HCCL would accept it, or a TableError naming the field."""
    if not isinstance(doc, dict):
        raise TableError("", "not an HCCL rank table (a JSON object is expected)")
    version = doc.get("version")
    if version == "2.0" or "rank_list" in doc:
        raise TableError("", "version \"2.0\" is the rank table of Ascend 950 (rank_list, "
                         "level_list, numeric ids), which packrun does not launch; give a "
                         "version \"1.0\" table (AI Server mode) or \"1.2\" (Atlas A3 super pods)")
    if version is None and "group_list" in doc:
        raise TableError("", "this is the template without 'version' (group_list, "
                         "instance_list: HCCL's older format for Atlas training servers); "
                         "packrun reads version \"1.0\" tables (server_list): write one with "
                         "`packrun rank-table`")
    if not isinstance(version, str):
        raise TableError("", f"field 'version' is {version!r}; give \"1.0\" (AI Server mode) or "
                         "\"1.2\" (Atlas A3 super-pod mode), as a string")
    if version not in VERSIONS:
        raise TableError("", f"field 'version' is {version!r}; packrun reads version \"1.0\" "
                         "(AI Server mode) and \"1.2\" (Atlas A3 super-pod mode) tables")
    servers = doc.get("server_list")
    if not isinstance(servers, list) or not servers:
        raise TableError("", "not an HCCL rank table: field 'server_list' is missing, empty or "
                         "not a list")
    status = _string(doc, "status", "")
    if status != "completed":
        raise TableError("", f"field 'status' is {status!r}; HCCL waits for \"completed\" (a "
                         "table still being written says \"initializing\")")
    if "server_count" in doc or version == "1.0":
        count = _string(doc, "server_count", "")
        if count != str(len(servers)):
            raise TableError("", f"field 'server_count' is {count!r} but server_list holds "
                             f"{len(servers)} server(s)")
    out: list[Server] = []
    ids: set[str] = set()
    ips: dict[str, str] = {}
    ranks: list[int] = []
    with_sdid = without_sdid = 0
    for i, server in enumerate(servers):
        if not isinstance(server, dict):
            raise TableError(f"server {i}: ", "not a JSON object")
        sid = _string(server, "server_id", f"server {i}: ")
        where = f"server {i} ({sid}): "
        if len(sid) > SERVER_ID_MAX:
            raise TableError(where, f"field 'server_id' has {len(sid)} characters; HCCL allows "
                             f"at most {SERVER_ID_MAX}")
        if sid in ids:
            raise TableError(where, "field 'server_id' is listed twice; each server once")
        ids.add(sid)
        host_ip = _string(server, "host_ip", where, required=False)
        if host_ip and not is_ip(host_ip):
            raise TableError(where, f"field 'host_ip' {host_ip!r} is not an IP address")
        devices = server.get("device")
        if not isinstance(devices, list) or not devices:
            raise TableError(where, "field 'device' is missing, empty or not a list")
        seen: set[int] = set()
        entries: list[Device] = []
        for d in devices:
            if not isinstance(d, dict):
                raise TableError(where, "a device entry is not a JSON object")
            dev = _number(d, "device_id", where)
            dwhere = f"{where}device {dev}: "
            if dev > max_device_id:
                raise TableError(dwhere, f"field 'device_id' is out of range 0..{max_device_id}")
            if dev in seen:
                raise TableError(where, f"field 'device_id' {dev} is listed twice")
            seen.add(dev)
            rank = _number(d, "rank_id", dwhere)
            dip = _string(d, "device_ip", dwhere, required=version == "1.0" and
                          len(servers) > 1)
            if dip:
                if not is_ip(dip):
                    raise TableError(dwhere, f"field 'device_ip' {dip!r} is not an IP address")
                if dip in ips:
                    raise TableError(dwhere, f"field 'device_ip' {dip} is also {ips[dip]}'s; "
                                     "every device has its own address")
                ips[dip] = f"server {sid} device {dev}"
            sdid = ""
            if "super_device_id" in d:
                sdid = _string(d, "super_device_id", dwhere, required=False)
                if not re.fullmatch(r"\d+", sdid):
                    raise TableError(dwhere, f"field 'super_device_id' is {sdid!r}, not a "
                                     "decimal number (npu-smi info -t spod-info's SDID)")
                if version != "1.2":
                    raise TableError(dwhere, "field 'super_device_id' belongs to version \"1.2\" "
                                     "tables (super-pod mode); this table says \"1.0\"")
                with_sdid += 1
            else:
                without_sdid += 1
            ranks.append(rank)
            entries.append(Device(dev, rank, dip, sdid))
        out.append(Server(sid, tuple(entries), host_ip))
    world = len(ranks)
    dup = sorted({r for r in ranks if ranks.count(r) > 1})
    if dup:
        raise TableError("", f"field 'rank_id': rank id {dup[0]} is used twice; every rank "
                         f"0..{world - 1} appears once")
    for i, s in enumerate(out):
        own = sorted(d.rank_id for d in s.devices)
        if own != list(range(own[0], own[0] + len(own))):
            raise TableError(f"server {i} ({s.server_id}): ", f"rank ids {own} are not "
                             "consecutive; HCCL needs each server's ranks together (e.g. 0-3 on "
                             "one server, 4-7 on the next)")
    if sorted(ranks) != list(range(world)):
        raise TableError("", f"field 'rank_id': rank ids are {sorted(ranks)}, not "
                         f"0..{world - 1}; every rank 0..{world - 1} appears once")
    if with_sdid and without_sdid:
        raise TableError("", f"field 'super_device_id' is on {with_sdid} device(s) but not on "
                         f"{without_sdid}; give it on every device (super-pod mode) or on none "
                         "(AI Server mode)")
    pods = _super_pods(doc, version, out, bool(with_sdid))
    if pods:
        pod_of = {sid: pid for pid, members in pods for sid in members}
        out = [Server(s.server_id, s.devices, s.host_ip, pod_of[s.server_id]) for s in out]
        _check_pod_order(out)
        for pid, _ in pods:
            sdids: dict[str, str] = {}
            for s in out:
                if s.super_pod_id != pid:
                    continue
                for d in s.devices:
                    if d.super_device_id and d.super_device_id in sdids:
                        raise TableError(
                            f"server {s.server_id} device {d.device_id}: ",
                            f"field 'super_device_id' {d.super_device_id} is also "
                            f"{sdids[d.super_device_id]}'s in super pod {pid}; each is unique "
                            "in its pod")
                    sdids[d.super_device_id] = f"server {s.server_id} device {d.device_id}"
    return Table(version, tuple(out), tuple(pods))


def _super_pods(doc: dict, version: str, servers: Sequence[Server],
                sdid: bool) -> list[tuple[str, tuple[str, ...]]]:
    raw = doc.get("super_pod_list")
    if raw is None:
        return []
    if version != "1.2":
        raise TableError("", "field 'super_pod_list' belongs to version \"1.2\" tables "
                         "(super-pod mode); this table says \"1.0\"")
    if not isinstance(raw, list):
        raise TableError("", "field 'super_pod_list' is not a list")
    listed = {s.server_id for s in servers}
    pods: list[tuple[str, tuple[str, ...]]] = []
    seen_pod: set[str] = set()
    member_of: dict[str, str] = {}
    for j, pod in enumerate(raw):
        if not isinstance(pod, dict):
            raise TableError(f"super pod {j}: ", "not a JSON object")
        pid = _string(pod, "super_pod_id", f"super pod {j}: ")
        where = f"super pod {pid}: "
        if len(pid) > SERVER_ID_MAX:
            raise TableError(where, f"field 'super_pod_id' is longer than {SERVER_ID_MAX}")
        if pid in seen_pod:
            raise TableError(where, "field 'super_pod_id' is listed twice; each pod once")
        seen_pod.add(pid)
        members = pod.get("server_list")
        if not isinstance(members, list) or not members:
            raise TableError(where, "field 'server_list' is missing, empty or not a list")
        names = []
        for m in members:
            sid = _string(m, "server_id", where) if isinstance(m, dict) else None
            if sid is None:
                raise TableError(where, "a server_list entry is not {\"server_id\": ...}")
            if sid not in listed:
                raise TableError(where, f"server_id {sid!r} is not in the table's server_list")
            if sid in member_of:
                raise TableError(where, f"server_id {sid!r} is also in super pod "
                                 f"{member_of[sid]}; a server belongs to one pod")
            member_of[sid] = pid
            names.append(sid)
        pods.append((pid, tuple(names)))
    missing = [s.server_id for s in servers if s.server_id not in member_of]
    if missing:
        raise TableError("", f"server {missing[0]!r} is in server_list but in no super pod of "
                         "super_pod_list; list every server in its pod")
    return pods


def _check_pod_order(servers: Sequence[Server]) -> None:
    """HCCL: servers of one super pod are listed together, one pod after the other."""
    done: set[str] = set()
    current = None
    for s in servers:
        if s.super_pod_id != current:
            if s.super_pod_id in done:
                raise TableError(f"server {s.server_id}: ", f"super pod {s.super_pod_id}'s "
                                 f"servers are not listed together (after super pod {current}); "
                                 "HCCL needs one pod's servers in a row in server_list")
            if current is not None:
                done.add(current)
            current = s.super_pod_id


# ---------------------------------------------------------------------------------------------
# Building tables
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """One server's share: its id, host IP, super pod (npu-smi's Super Pod ID; "" = AI Server
    mode) and [(device_id, device_ip, super_device_id)], device ids ascending."""
    server_id: str
    devices: tuple[tuple[int, str, str], ...]
    host_ip: str = ""
    super_pod_id: str = ""


def build_v12(parts: Sequence[Part]) -> dict:
    """A version "1.2" table: servers grouped by super pod (pods in order of first appearance,
    servers in the order given within a pod), rank ids renumbered server after server, device
    after device, as the generator numbers them (podRank * devicesPerPod + index)."""
    if not parts:
        raise TableError("", "a rank table needs at least one server")
    order: list[str] = []
    for p in parts:
        if not p.super_pod_id:
            raise TableError(f"server {p.server_id}: ", "no super pod id (npu-smi info -t "
                             "spod-info names none: AI Server mode, where tables are version "
                             "\"1.0\")")
        if p.super_pod_id not in order:
            order.append(p.super_pod_id)
    grouped = [p for pod in order for p in parts if p.super_pod_id == pod]
    server_list, rank = [], 0
    for p in grouped:
        devices = []
        for dev, ip, sdid in sorted(p.devices):
            entry = {"device_id": str(dev), "super_device_id": str(sdid)}
            if ip:
                entry["device_ip"] = ip
            entry["rank_id"] = str(rank)
            devices.append(entry)
            rank += 1
        server: dict = {"server_id": p.server_id}
        if p.host_ip:
            server["host_ip"] = p.host_ip
        server["device"] = devices
        server_list.append(server)
    table = {"status": "completed", "version": "1.2", "server_count": str(len(server_list)),
             "server_list": server_list,
             "super_pod_list": [{"super_pod_id": pod, "server_list": [
                 {"server_id": p.server_id} for p in grouped if p.super_pod_id == pod]}
                 for pod in order]}
    check(table)  # the table HCCL will read: duplicate ids, SDIDs, IPs are refused here
    return table


def parts_of(table: Table) -> list[Part]:
    """The servers of a checked version 1.2 table as parts (to merge tables)."""
    return [Part(s.server_id, tuple((d.device_id, d.device_ip, d.super_device_id)
                                    for d in s.devices), s.host_ip, s.super_pod_id)
            for s in table.servers]
