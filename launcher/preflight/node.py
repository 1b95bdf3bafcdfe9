"""Ascend node checks before any rank starts: run by each node's launch script (`python -m
launcher.node check RUN_DIR NODE`, before msrun or the ranks start) and by `packrun check` on the
node it runs on. Each finding is one line naming the node, the card and the fix:

  cards present and healthy      npu-smi info (the card table), npu-smi info -t health -i N -c C
  no process holds a card        npu-smi info (the process table); on a restart, cards held by
                                 this run's own previous attempt are waited for (held_card_wait_s)
  device network                 hccn_tool -i N -link -g (UP), -ip -g (= the rank table's
                                 device_ip), -net_health -g (Success; net_health_check = true)
  super-pod mode                 npu-smi info -t spod-info: a super pod wants a version 1.2
                                 table, and its SDIDs are the table's super_device_ids
  CANN environment               ASCEND_HOME_PATH (set_env.sh of the toolkit)

The cards are the job's `devices`, else the ones Slurm's gres/npu plugin allocated
(ASCEND_VISIBLE_DEVICES with SLURM_JOB_NPUS), else 0..cards_per_node-1. Parsing is
launcher/core/ascend; this module runs the tools.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import psutil

from launcher.core.ascend import hccn, npusmi
from launcher.core.ascend import ranktable as ascend_table
from launcher.core.devices import GRES_NPU_VISIBLE, gres_npus, parse_devices
from launcher.core.errors import EXIT_USER_ERROR, UserError
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.names import ATTEMPT_ENV, RANK_TABLE_JSON
from launcher.core.spec import JobSpec

OK, WARNING, ERROR = "ok", "warning", "error"  # (as launcher/preflight/checks.py)
TOOL_TIMEOUT_S = 30
POLL_S = 1.0
CONTAINER_FIX = ("in a container, mount the cards (/dev/davinciN, /dev/davinci_manager, "
                 "/dev/devmm_svm, /dev/hisi_hdc) and the driver (/usr/local/Ascend/driver, "
                 "/usr/local/bin/npu-smi); otherwise check the driver with `npu-smi info` as "
                 "root")


@dataclass(frozen=True)
class NodeFinding:
    level: str
    card: int | None
    text: str
    fix: str = ""

    def line(self, node: str) -> str:
        where = f"node {node}" + (f", card {self.card}" if self.card is not None else "")
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.level.upper():<8}node check: {where}: {self.text}{fix}"


Runner = Callable[[Sequence[str]], "tuple[int, str] | None"]


def run_tool(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, str] | None:
    """(exit status, stdout + stderr) of a tool, None when it is not on PATH."""
    path = (env or os.environ).get("PATH")
    if shutil.which(cmd[0], path=path) is None:
        return None
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                             check=False, env=dict(env) if env is not None else None)
    except subprocess.TimeoutExpired:
        return 124, f"did not answer within {TOOL_TIMEOUT_S} s"
    return res.returncode, res.stdout + res.stderr


def node_cards(spec: JobSpec, env: Mapping[str, str]) -> tuple[list[int], str]:
    """The cards this node's ranks use and where that comes from (for the log line)."""
    gres = gres_npus(env)
    if spec.devices:
        cards = parse_devices(spec.devices, "key 'devices'")
        if gres is not None and sorted(gres) != cards:
            raise UserError(f"key 'devices' is {spec.devices!r} but Slurm's gres/npu allocated "
                            f"cards {','.join(map(str, gres))} ({GRES_NPU_VISIBLE}); drop "
                            "devices and let the allocation decide")
        return cards, f"key 'devices' = {spec.devices!r}"
    if gres is not None:
        if len(gres) != spec.cards_per_node:
            raise UserError(f"Slurm's gres/npu allocated {len(gres)} card(s) "
                            f"({GRES_NPU_VISIBLE}={','.join(map(str, gres))}) but cards_per_node "
                            f"= {spec.cards_per_node}; ask for gres = \"npu:"
                            f"{spec.cards_per_node}\"")
        return sorted(gres), (f"Slurm's gres/npu ({GRES_NPU_VISIBLE}="
                              f"{env.get(GRES_NPU_VISIBLE)})")
    return list(range(spec.cards_per_node)), f"cards 0..{spec.cards_per_node - 1}"


def _own(pid: int, run_dir: Path | None) -> bool:
    """Whether process `pid` is a worker of this run (an earlier attempt's: its command line
    names the run directory)."""
    if run_dir is None:
        return False
    try:
        return str(run_dir) in " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return False


def _going(pid: int, run_dir: Path | None) -> bool:
    """What a restart waits for: this run's own worker, or a process already gone (exited, a
    zombie, or not visible from here) that npu-smi still lists."""
    if run_dir is None:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, OSError):
        return False
    return _own(pid, run_dir)


def _name(p: npusmi.Process) -> str:
    if p.name:
        return p.name
    try:
        return psutil.Process(p.pid).name() or "?"
    except (psutil.Error, OSError):
        return "(name not shown; not visible from here)"


def _info(run: Runner) -> tuple[npusmi.Info | None, NodeFinding | None]:
    got = run(["npu-smi", "info"])
    if got is None:
        return None, NodeFinding(ERROR, None, "npu-smi is not on PATH (no Ascend driver here)",
                                 "run on an Ascend node, or add /usr/local/bin to PATH")
    rc, out = got
    try:
        return npusmi.parse_info(out), None
    except npusmi.ParseError:
        said = npusmi.failure_text(out) or (out.strip().splitlines() or [f"exit {rc}"])[-1]
        return None, NodeFinding(ERROR, None, f"npu-smi info failed: {said!r}", CONTAINER_FIX)


def check_node(spec: JobSpec, cards: Sequence[int], server: ascend_table.Server | None,
               version: str | None, *, env: Mapping[str, str], run_dir: Path | None = None,
               attempt: int = 1, run: Runner | None = None,
               sleep: Callable[[float], None] = time.sleep) -> list[NodeFinding]:
    """Every finding for this node's `cards`; `server` is its entry of the rank table (None:
    no table) and `version` the table's version."""
    run = run or (lambda cmd: run_tool(cmd, env))
    out: list[NodeFinding] = []
    if not env.get("ASCEND_HOME_PATH"):
        out.append(NodeFinding(ERROR, None, "the CANN environment is not set (ASCEND_HOME_PATH "
                               "is unset)", "source the toolkit's set_env.sh (e.g. env_setup = "
                               "[\"source /usr/local/Ascend/ascend-toolkit/set_env.sh\"])"))
    info, failed = _info(run)
    if failed is not None:
        return out + [failed]
    assert info is not None
    present = {c.device: c for c in info.chips}
    for card in cards:
        chip = present.get(card)
        if chip is None:
            out.append(NodeFinding(ERROR, card, f"not present (npu-smi lists devices "
                                   f"{','.join(map(str, sorted(present)))})",
                                   "use cards this node has (devices, cards_per_node)"))
            continue
        if chip.health != npusmi.HEALTHY:
            out.append(NodeFinding(ERROR, card, f"health {chip.health} in npu-smi info",
                                   f"see `npu-smi info -t health -i {chip.npu} -c {chip.chip}`; "
                                   "leave the card out (devices) or have it repaired"))
            continue
        got = run(["npu-smi", "info", "-t", "health", "-i", str(chip.npu), "-c", str(chip.chip)])
        if got is not None and got[0] == 0:
            try:
                health = npusmi.parse_health(got[1])
            except npusmi.ParseError:
                health = None
            if health is not None and not health.ok:
                out.append(NodeFinding(ERROR, card, f"health {health.status} (error code "
                                       f"{health.error_code}: {health.error_information})",
                                       "leave the card out (devices) or have it repaired"))
    out += _holders(spec, cards, info, run, run_dir, attempt, sleep)
    out += _network(spec, cards, server, run)
    out += _super_pod(cards, info, server, version, run)
    if not any(f.level == ERROR for f in out):
        out.append(NodeFinding(OK, None, f"cards {','.join(map(str, cards))} present, healthy "
                               "and free" + ("" if info.has_process_table else
                                             " (as far as npu-smi shows)")))
    return out


def _holders(spec, cards, info, run, run_dir, attempt, sleep) -> list[NodeFinding]:
    if not info.has_process_table:
        return [NodeFinding(WARNING, None, f"this npu-smi ({info.version}) lists no processes: "
                            "whether a card is held cannot be checked",
                            "update the driver, or check with `lsof /dev/davinciN`")]
    deadline = time.monotonic() + spec.held_card_wait_s
    while True:
        held = {c: info.holders(c) for c in cards if info.holders(c)}
        own = {c: ps for c, ps in held.items() if all(_going(p.pid, run_dir) for p in ps)}
        if not own or attempt <= 1 or time.monotonic() >= deadline:
            break
        sleep(POLL_S)  # a restart: the previous attempt's workers are still going away
        again, _ = _info(run)
        if again is None:
            break
        info = again
    out = []
    for card, procs in held.items():
        for p in procs:
            mine = _own(p.pid, run_dir)
            text = f"held by pid {p.pid} ({_name(p)})"
            if mine:
                text += f", a worker of this run's previous attempt still there after " \
                        f"{spec.held_card_wait_s} s"
            out.append(NodeFinding(ERROR, card, text, f"end it (kill {p.pid}; CANN then needs "
                                   "about 10 s to free the card) or use other cards (devices)"))
    return out


def _network(spec, cards, server, run) -> list[NodeFinding]:
    out: list[NodeFinding] = []
    table_ips = {d.device_id: d.device_ip for d in server.devices} if server else {}
    multi = spec.nodes > 1
    for card in cards:
        got = run(["hccn_tool", "-i", str(card), "-link", "-g"])
        if got is None:
            level = ERROR if multi else WARNING
            return [NodeFinding(level, None, "hccn_tool is not on PATH: the device network "
                                "cannot be checked", "add /usr/local/Ascend/driver/tools to PATH "
                                "(the driver's set_env)")]
        status = hccn.link_status(got[1])
        if status != "UP":
            level = ERROR if multi or table_ips else WARNING
            out.append(NodeFinding(level, card, f"device-network link is {status or 'unknown'} "
                                   f"(hccn_tool -i {card} -link -g: {got[1].strip()!r})",
                                   f"check the cable, optics and switch port (hccn_tool -i {card} "
                                   "-link_stat -g, -optical -g)"))
        want = table_ips.get(card)
        if want:
            got = run(["hccn_tool", "-i", str(card), "-ip", "-g"])
            have = hccn.device_ip(got[1]) if got else None
            if have != want:
                out.append(NodeFinding(ERROR, card, f"device IP is {have or 'not set'} but the "
                                       f"rank table's device_ip is {want} (HCCL would stop with "
                                       "EI0014)", "write the table again from the cards "
                                       "(packrun rank-table) or set the address (hccn_tool -i "
                                       f"{card} -ip -s address {want} netmask ...)"))
        if spec.net_health_check:
            got = run(["hccn_tool", "-i", str(card), "-net_health", "-g"])
            health = hccn.net_health(got[1]) if got else None
            if health != "Success":
                out.append(NodeFinding(ERROR, card, f"net health is {health or 'unknown'} "
                                       f"(hccn_tool -i {card} -net_health -g)",
                                       f"set the peer to probe (hccn_tool -i {card} -netdetect -s "
                                       "address PEER_DEVICE_IP) and check the link and the "
                                       "switch"))
    return out


def _super_pod(cards, info, server, version, run) -> list[NodeFinding]:
    if server is None:
        return []
    chip = info.chip_of(cards[0])
    if chip is None:
        return []
    got = run(["npu-smi", "info", "-t", "spod-info", "-i", str(chip.npu), "-c", str(chip.chip)])
    pod = npusmi.parse_spod_info(got[1]) if got and got[0] == 0 else None
    if pod is not None and version == "1.0":
        return [NodeFinding(WARNING, cards[0], f"npu-smi puts this server in super pod "
                            f"{pod.super_pod_id} (SDID {pod.sdid}) but the rank table is version "
                            "1.0 (AI Server mode)", "in super-pod mode write a 1.2 table "
                            "(packrun rank-table --rank_table_version=1.2 on each server, "
                            "packrun merge-rank-tables); keep 1.0 if the cluster runs AI Server "
                            "mode")]
    out = []
    if version == "1.2":
        for d in server.devices:
            c = info.chip_of(d.device_id)
            if c is None:
                continue
            got = run(["npu-smi", "info", "-t", "spod-info", "-i", str(c.npu), "-c", str(c.chip)])
            pod = npusmi.parse_spod_info(got[1]) if got and got[0] == 0 else None
            if pod is None:
                out.append(NodeFinding(ERROR, d.device_id, "the rank table is version 1.2 but "
                                       "npu-smi info -t spod-info names no super pod",
                                       "use a version 1.0 table (AI Server mode)"))
            elif pod.sdid != d.super_device_id:
                out.append(NodeFinding(ERROR, d.device_id, f"super_device_id is "
                                       f"{d.super_device_id} in the rank table but npu-smi says "
                                       f"SDID {pod.sdid}", "write the table again on this "
                                       "server (packrun rank-table --rank_table_version=1.2)"))
    return out


# ---------------------------------------------------------------------------------------------
# The node verb and packrun check
# ---------------------------------------------------------------------------------------------

def table_server(run_dir: Path, node: int) -> tuple[ascend_table.Server | None, str | None]:
    """This node's server of RUN_DIR/rank_table.json (table order = node order) and the
    table's version; (None, None) without a table."""
    import json
    path = run_dir / RANK_TABLE_JSON
    if not path.is_file():
        return None, None
    try:
        table = ascend_table.check(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ascend_table.TableError) as e:
        raise UserError(f"{path}: {e}") from None
    server = table.servers[node] if node < len(table.servers) else None
    return server, table.version


def node_check_main(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> int:
    """`python -m launcher.node check RUN_DIR NODE`: the cards this node uses (printed on
    stdout when they come from Slurm's gres/npu: the launch script exports them as
    ASCEND_RT_VISIBLE_DEVICES), then the node checks (unless node_checks = "off"); exit 2 when
    one fails and node_checks = "error"."""
    run_dir, node = Path(argv[0]).resolve(), int(argv[1])
    host = f"{node} ({socket.gethostname()})"
    try:
        spec = spec_from_json(run_dir)
        cards, source = node_cards(spec, env)
        server, version = table_server(run_dir, node)
    except UserError as e:
        print(f"packrun: error: node {host}: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    if server is not None and gres_npus(env) is not None:
        listed = sorted(d.device_id for d in server.devices)
        if listed != cards:
            print(f"packrun: error: node {host}: the rank table lists cards "
                  f"{','.join(map(str, listed))} for this server but {source} gives "
                  f"{','.join(map(str, cards))}; write the table from the allocated cards",
                  file=sys.stderr)
            return EXIT_USER_ERROR
    print(f"packrun: node {host}: cards {','.join(map(str, cards))} from {source}",
          file=sys.stderr, flush=True)
    if gres_npus(env) is not None:
        print(",".join(map(str, cards)), flush=True)
    if spec.node_checks == "off":
        return 0
    attempt = int(env.get(ATTEMPT_ENV, "1") or 1)
    found = check_node(spec, cards, server, version, env=env, run_dir=run_dir, attempt=attempt)
    errors = 0
    for f in found:
        level = f.level
        if level == ERROR and spec.node_checks == "warn":
            level = WARNING
        errors += level == ERROR
        print(NodeFinding(level, f.card, f.text, f.fix).line(host), file=sys.stderr,
              flush=True)
    if errors:
        print(f"packrun: error: node {host}: {errors} node check(s) failed; no rank was "
              "started (node_checks = \"warn\" only reports them)", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return 0
