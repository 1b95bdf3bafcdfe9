"""HCCL rank tables (version "1.0"), byte for byte as the Model Zoo's hccl_tools.py writes them.

    {"version": "1.0", "server_count": "2",
     "server_list": [{"server_id": IP, "device": [{"device_id": "0", "device_ip": IP,
                                                   "rank_id": "0"}, ...],
                      "host_nic_ip": "reserve"}, ...],
     "status": "completed"}                              (json.dump, indent 4, every value a string)

Rank ids run consecutively over the servers in the order given, each server's devices in
ascending id order. Device IPs come from an explicit list, an hccn.conf (`address_N=IP` lines) or
`hccn_tool -i N -ip -g`. Building and merging are pure; only `query_hccn_tool` starts a process.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping, NoReturn, Sequence

from launcher.core.ascend import npusmi
from launcher.core.ascend import ranktable as ascend_table
from launcher.core.devices import MAX_DEVICE_ID, parse_devices
from launcher.core.errors import UserError
from launcher.core.log import STDERR, get_logger
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.names import RANK_TABLE_JSON

log = get_logger(__name__)

DEFAULT_HCCN_CONF = "/etc/hccn.conf"
_HCCN_ADDRESS = re.compile(r"\s*address_(\d+)\s*=\s*(\S*)\s*")


# ---------------------------------------------------------------------------------------------
# Inputs: device sets, IPv4 addresses, device IPs
# ---------------------------------------------------------------------------------------------


def group_warning(devices: Sequence[int]) -> str | None:
    """HCCL rings 2- and 4-card jobs inside one group of four (0-3 or 4-7); a subset that crosses
    groups is slow or refused."""
    if len(devices) in (2, 4) and len({d // 4 for d in devices}) > 1:
        ids = ",".join(map(str, devices))
        return (f"devices {ids} cross the 0-3 / 4-7 group boundary; HCCL expects a 2- or 4-card "
                "job inside one group (e.g. 0-3 or 4-7)")
    return None


def check_ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ipaddress.AddressValueError:
        raise UserError(f"{what}: {value!r} is not an IPv4 address (four numbers 0-255, e.g. "
                        "192.168.100.101)") from None


def split_ips(value) -> list[str]:
    """Comma-separated IPs, or a tuple/list of them (fire's reading of `--device_ips=a,b`)."""
    items = value if isinstance(value, (tuple, list)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _file_above(path: Path) -> Path:
    """The first part of `path` that is a file (why opening `path` says not a directory)."""
    for parent in reversed(path.parents):
        if parent.is_file():
            return parent
    return path


def read_hccn_conf(path: str | os.PathLike) -> dict[int, str]:
    """Device id -> device IP from the `address_N=IP` lines of an hccn.conf."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"hccn.conf {p} not found; point hccn_conf (--hccn_conf) at the file "
                        "hccn_tool wrote, or give the device IPs (device_ips / --device_ips)"
                        ) from None
    except NotADirectoryError:
        raise UserError(f"hccn.conf {p} not found: {_file_above(p)} is a file, not a folder; "
                        "point hccn_conf (--hccn_conf) at the file hccn_tool wrote") from None
    except (IsADirectoryError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"hccn.conf {p}: cannot read it ({e.__class__.__name__}); point "
                        "hccn_conf (--hccn_conf) at the file hccn_tool wrote") from None
    ips: dict[int, str] = {}
    for n, line in enumerate(lines, 1):
        m = _HCCN_ADDRESS.fullmatch(line)
        if m:
            ips[int(m.group(1))] = check_ipv4(m.group(2), f"{p} line {n} (address_{m.group(1)})")
    return ips


def query_hccn_tool(devices: Iterable[int]) -> dict[int, str]:
    """Device id -> device IP from `hccn_tool -i N -ip -g` (prints `ipaddr:IP`)."""
    ips = {}
    for d in devices:
        cmd = ["hccn_tool", "-i", str(d), "-ip", "-g"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            raise UserError(f"`{' '.join(cmd)}` did not answer within 30 s") from None
        m = re.search(r"^\s*ipaddr\s*:\s*(\S+)", res.stdout, re.M)
        if res.returncode != 0 or not m:
            said = (res.stderr or res.stdout).strip().splitlines()
            raise UserError(f"`{' '.join(cmd)}` gave no device IP (exit {res.returncode}"
                            f"{': ' + said[-1] if said else ''}); configure the device NIC or "
                            "pass --device_ips")
        ips[d] = check_ipv4(m.group(1), f"hccn_tool -i {d}")
    return ips


def ips_for_devices(devices: Sequence[int], known: Mapping[int, str], source: str) -> list[str]:
    missing = [d for d in devices if d not in known]
    if missing:
        raise UserError(f"{source} has no address for device {missing[0]} (no "
                        f"address_{missing[0]}=IP line); configure it with hccn_tool or give "
                        "the device IPs explicitly")
    return [known[d] for d in devices]


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

def build_rank_table(servers: Sequence[tuple[str, Sequence[tuple[int, str]]]]) -> dict:
    """`servers` is [(server_ip, [(device_id, device_ip), ...]), ...] in rank order."""
    if not servers:
        raise UserError("a rank table needs at least one server")
    seen_servers: set[str] = set()
    seen_ips: dict[str, str] = {}
    server_list, rank = [], 0
    for server_ip, devices in servers:
        server_ip = check_ipv4(server_ip, "server ip")
        if server_ip in seen_servers:
            raise UserError(f"server {server_ip} is listed twice; each server appears once")
        seen_servers.add(server_ip)
        if not devices:
            raise UserError(f"server {server_ip}: the device set is empty")
        device_list: list[dict[str, str]] = []
        for device_id, device_ip in sorted(devices):
            if not 0 <= device_id <= MAX_DEVICE_ID:
                raise UserError(f"server {server_ip}: device {device_id} is out of range; Ascend "
                                f"device ids are 0..{MAX_DEVICE_ID}")
            if device_list and device_list[-1]["device_id"] == str(device_id):
                raise UserError(f"server {server_ip}: device {device_id} is listed twice")
            device_ip = check_ipv4(device_ip, f"server {server_ip} device {device_id} ip")
            where = f"server {server_ip} device {device_id}"
            if device_ip in seen_ips:
                raise UserError(f"device ip {device_ip} is used twice ({seen_ips[device_ip]} and "
                                f"{where}); every device has its own address")
            seen_ips[device_ip] = where
            device_list.append({"device_id": str(device_id), "device_ip": device_ip,
                                "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": server_ip, "device": device_list,
                            "host_nic_ip": "reserve"})
    return {"version": "1.0", "server_count": str(len(server_list)),
            "server_list": server_list, "status": "completed"}


def merge_rank_tables(tables: Sequence[tuple[str, dict]]) -> dict:
    """Merge (source name, table) pairs into one table of their version ("1.0" or "1.2", all
    alike); servers keep the order given (1.2: grouped by super pod, pods in order of first
    appearance) and rank ids are renumbered consecutively."""
    checked = []
    for source, table in tables:
        try:
            checked.append((source, ascend_table.check(table)))
        except ascend_table.TableError as e:
            raise UserError(f"{source}: {e}") from None
    versions = sorted({t.version for _, t in checked})
    if len(versions) > 1:
        which = ", ".join(f"{s} ({t.version})" for s, t in checked)
        raise UserError(f"the tables mix versions ({which}); merge tables of one version: 1.0 "
                        "for AI Server mode, 1.2 for Atlas A3 super pods")
    if versions == ["1.2"]:
        try:
            return ascend_table.build_v12([p for _, t in checked for p in ascend_table.parts_of(t)])
        except ascend_table.TableError as e:
            raise UserError(f"merged table: {e}") from None
    return build_rank_table([(s.server_id, [(d.device_id, d.device_ip) for d in s.devices])
                             for _, t in checked for s in t.servers])


def to_json(table: dict) -> str:
    """The file text, as hccl_tools.py's json.dump(table, f, indent=4) writes it."""
    return json.dumps(table, indent=4)


# ---------------------------------------------------------------------------------------------
# An existing table (job key rank_table_file)
# ---------------------------------------------------------------------------------------------

def read_table_file(path: str | os.PathLike) -> tuple[str, dict]:
    """(the file's text, exactly as it is, and its JSON), or a UserError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return text, json.loads(text)
    except FileNotFoundError:
        raise UserError(f"rank_table_file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"rank_table_file {path}: not a JSON rank table ({e})") from None
    except (IsADirectoryError, PermissionError) as e:
        raise UserError(f"rank_table_file {path}: cannot read it "
                        f"({e.__class__.__name__})") from None


def validate_table(table, source: str, nodes: int, cards: int, master: str = "",
                   version: str = "auto") -> list[tuple[str, list[tuple[int, int]]]]:
    """Check a version 1.0 or 1.2 table as HCCL does (launcher/core/ascend/ranktable.py: every
    value a string, status "completed", each server's rank ids consecutive and 0..world-1 once,
    super pods together, super_device_id on every device or none) and for a job of `nodes` x
    `cards`: server count, devices per server, the master's server first (when `master` is an
    IPv4 address and the servers are named by address), the version the job asks for (`version`
    "1.0" / "1.2"; "auto" takes either). Returns [(server_id, [(device_id, rank_id)])] in table
    order. Errors name the file, the server and the field."""
    def bad(where: str, text: str) -> NoReturn:
        raise UserError(f"rank_table_file {source}: {where}{text}")
    try:
        checked = ascend_table.check(table)
    except ascend_table.TableError as e:
        bad(e.where, e.text)
    if version != "auto" and checked.version != version:
        mode = "Atlas A3 super-pod mode" if version == "1.2" else "AI Server mode"
        bad("", f"field 'version' is {checked.version!r} but the job's rank_table_version is "
            f"{version!r} ({mode}); give a version {version} table or set rank_table_version")
    servers = checked.servers
    if len(servers) != nodes:
        bad("", f"{len(servers)} server(s) in server_list, the job has nodes = {nodes}; give a "
            "table with one server per node, or set nodes to match")
    for i, server in enumerate(servers):
        if len(server.devices) != cards:
            bad(f"server {i} ({server.server_id}): ", f"field 'device' lists "
                f"{len(server.devices)} device(s), the job has cards_per_node = {cards}")
    first = servers[0].server_id if _is_ipv4(servers[0].server_id) else servers[0].host_ip
    if master and _is_ipv4(master) and first and first != master:
        bad("server 0: ", f"field 'server_id' is {servers[0].server_id} but master_addr is "
            f"{master}; the master's server must come first")
    return [(s.server_id, [(d.device_id, d.rank_id) for d in s.devices]) for s in servers]


def _is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
        return True
    except ipaddress.AddressValueError:
        return False


def local_server_index(table: dict, source: str) -> int:
    """The index of the server whose server_id is an address of this machine (a socket can bind
    to it)."""
    import socket
    for i, server in enumerate(table["server_list"]):
        for address in (server.get("server_id"), server.get("host_ip")):
            if not address or not ascend_table.is_ip(address):
                continue
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family) as s:
                try:
                    s.bind((address, 0))
                    return i
                except OSError:
                    continue
    ids = ", ".join(s["server_id"] for s in table["server_list"])
    raise UserError(f"{source}: none of its server ids or host_ips ({ids}) is an address of this "
                    "machine; start the script with this server's index (bash rank_table.sh N), "
                    "or fix the table's server_id / host_ip")


def server_index_main(argv: Sequence[str]) -> int:
    """`python -m launcher.node server-index TABLE`: print this machine's server index."""
    try:
        text = Path(argv[0]).read_text(encoding="utf-8")
        print(local_server_index(json.loads(text), argv[0]))
    except UserError as e:
        print(f"packrun: error: {e}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------------------
# Commands (packrun rank-table / merge-rank-tables)
# ---------------------------------------------------------------------------------------------

def device_ip_lists(devices: Sequence[int], n_servers: int, hccn_conf=None, device_ips=None,
                    what: str = "--device_ips") -> list[list[str]]:
    """One list of device IPs per server, the one precedence every rank table packrun writes
    follows (`packrun rank-table` and `render`): an explicit list (`what` names it) > an
    hccn.conf (`hccn_conf`, or /etc/hccn.conf when it exists) > `hccn_tool -i N -ip -g`."""
    k = len(devices)
    if device_ips is not None and split_ips(device_ips):
        ips = split_ips(device_ips)
        if len(ips) != k * n_servers:
            raise UserError(f"{what} has {len(ips)} address(es); {n_servers} node(s) x "
                            f"{k} card(s) need {k * n_servers}, node by node")
        return [ips[i * k:(i + 1) * k] for i in range(n_servers)]
    if n_servers > 1:
        raise UserError(f"{what} is needed for a rank table over {n_servers} nodes (an "
                        "hccn.conf describes one server): list every server's device IPs, "
                        "server by server, or write one table per server and join them with "
                        "`packrun merge-rank-tables`")
    if hccn_conf is not None or Path(DEFAULT_HCCN_CONF).is_file():
        path = hccn_conf if hccn_conf is not None else DEFAULT_HCCN_CONF
        return [ips_for_devices(devices, read_hccn_conf(path), str(path))]
    if shutil.which("hccn_tool"):
        return [[query_hccn_tool(devices)[d] for d in devices]]
    raise UserError(f"no device IPs: {DEFAULT_HCCN_CONF} does not exist and hccn_tool is not on "
                    f"PATH; give the hccn.conf (hccn_conf / --hccn_conf) or the IPs ({what})")


def _write(table: dict, out) -> Path:
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out={out} is a directory; give the file to write, e.g. "
                        f"{path / RANK_TABLE_JSON}")
    if not path.parent.is_dir():
        raise UserError(f"--out={out}: directory {path.parent} does not exist")
    write_atomic(path, to_json(table))
    return path


def _run_tool(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise UserError(f"{cmd[0]} is not on PATH: run this on the Ascend server (the driver's "
                        "tools, /usr/local/bin and /usr/local/Ascend/driver/tools)")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(cmd)}` did not answer within {timeout:g} s") from None


def query_super_pods(devices: Iterable[int]) -> dict[int, npusmi.SuperPod | None]:
    """Device id -> its super pod as `npu-smi info -t spod-info -i NPU -c CHIP` reports it
    (None: no super pod, AI Server mode); NPU and chip of each device from `npu-smi info -m`."""
    chip_map = npusmi.parse_chip_map(_run_tool(["npu-smi", "info", "-m"]).stdout)
    out = {}
    for d in devices:
        npu, chip = chip_map.get(d, (d, 0))
        cmd = ["npu-smi", "info", "-t", "spod-info", "-i", str(npu), "-c", str(chip)]
        res = _run_tool(cmd)
        out[d] = npusmi.parse_spod_info(res.stdout) if res.returncode == 0 else None
    return out


def detect_version(devices: Sequence[int]) -> str:
    """rank_table_version "auto" on this server: "1.2" when npu-smi puts its cards in a super pod,
    else "1.0" (also where npu-smi is not installed: not an Atlas A3)."""
    if shutil.which("npu-smi") is None:
        return "1.0"
    pods = query_super_pods(devices[:1])
    version = "1.2" if any(pods.values()) else "1.0"
    log.info(f"packrun: rank table version {version} (npu-smi info -t spod-info: "
             f"{'a super pod' if version == '1.2' else 'no super pod'})", extra=STDERR)
    return version


def rank_table_command(devices, server_ip, out, hccn_conf=None, device_ips=None,
                       rank_table_version="auto", server_id=None) -> Path:
    """`packrun rank-table`: one table for one or more servers (comma-separated server_ip); with
    version 1.2 (Atlas A3 super pods) one server's part, its super pod and super_device_ids from
    npu-smi, to be joined with the other servers' by `packrun merge-rank-tables`."""
    if not server_ip:
        raise UserError("--server_ip is required: this server's IPv4 address (several, "
                        "comma-separated, for one table over several servers)")
    if not out:
        raise UserError("--out is required: the rank table file to write, e.g. "
                        "--out=rank_table.json")
    version = str(rank_table_version)
    if version not in ("auto", "1.0", "1.2"):
        raise UserError(f"--rank_table_version={version}: give auto, 1.0 or 1.2 (2.0 is Ascend "
                        "950's format, which packrun does not write)")
    devs = parse_devices(devices)
    servers = split_ips(server_ip)
    warning = group_warning(devs)
    if warning:
        log.warning(f"packrun: warning: {warning}")
    if version == "auto":
        version = detect_version(devs)
    ip_lists = device_ip_lists(devs, len(servers), hccn_conf, device_ips)
    if version == "1.0":
        table = build_rank_table([(s, list(zip(devs, ips)))
                                  for s, ips in zip(servers, ip_lists)])
        return _write(table, out)
    if len(servers) != 1:
        raise UserError("a version 1.2 table is written on each server for itself (its super "
                        "pod comes from its own npu-smi): give one --server_ip, then join the "
                        "servers' tables with `packrun merge-rank-tables`")
    pods = query_super_pods(devs)
    missing = [d for d, pod in pods.items() if pod is None]
    if missing:
        raise UserError(f"device {missing[0]}: `npu-smi info -t spod-info` names no super pod "
                        "(no SDID / Super Pod ID): this server runs in AI Server mode, where "
                        "tables are version 1.0 (--rank_table_version=1.0)")
    ids = {pod.super_pod_id for pod in pods.values() if pod}
    if len(ids) > 1:
        raise UserError(f"npu-smi puts this server's cards in several super pods "
                        f"({', '.join(sorted(ids))}); give the cards of one")
    host = check_ipv4(servers[0], "--server_ip")
    name = str(server_id) if server_id else host
    part = ascend_table.Part(name, tuple((d, ip, pods[d].sdid)  # type: ignore[union-attr]
                                         for d, ip in zip(devs, ip_lists[0])), host, ids.pop())
    try:
        table = ascend_table.build_v12([part])
    except ascend_table.TableError as e:
        raise UserError(str(e)) from None
    return _write(table, out)


def merge_command(paths: Sequence[str], out) -> Path:
    """`packrun merge-rank-tables A.json B.json ... --out=FILE`."""
    if not paths:
        raise UserError("merge-rank-tables needs the tables to merge: A.json B.json ...")
    if not out:
        raise UserError("--out is required: the merged rank table file to write")
    tables = []
    for p in paths:
        try:
            tables.append((str(p), json.loads(Path(p).read_text(encoding="utf-8"))))
        except FileNotFoundError:
            raise UserError(f"rank table {p} not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{p}: not a JSON rank table ({e})") from None
        except IsADirectoryError:
            raise UserError(f"rank table {p} is a directory; give the .json files") from None
    return _write(merge_rank_tables(tables), out)
