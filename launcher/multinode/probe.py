"""What a node says about itself before a launch over ssh: `python -m launcher.node probe ...`
runs on every node (over ssh, or here for node 0 on this machine) and prints one JSON line;
the launching packrun (launcher/multinode/preflight.py) judges the answers together.

    probe TOKEN_FILE TOKEN MASTER_ADDR PORT SELF_NAME

- its host name and its network addresses (loopback left out): two hosts with an address in
  common are one machine;
- whether TOKEN_FILE holds TOKEN (the launching side wrote it into the output directory: shared
  storage at the same path);
- what MASTER_ADDR resolves to here ("" when it does not);
- PORT > 0: whether that TCP port is free here; PORT 0: a free port, picked here;
- what SELF_NAME (this host's name in the host list) resolves to here, and the address the ssh
  session came in on (SSH_CONNECTION): this node's address for the rank table and master_addr.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psutil


def addresses() -> list[str]:
    """This host's network addresses, loopback and link-local left out."""
    found = []
    for entries in psutil.net_if_addrs().values():
        for a in entries:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = a.address.split("%")[0]
            if is_loopback(ip) or ip.lower().startswith("fe80:"):
                continue
            found.append(ip)
    return sorted(set(found))


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "0.0.0.0") or ip.startswith("::ffff:127.")


def resolve(name: str) -> str:
    """`name`'s first address here (IPv4 first, as getent ahosts lists), or ""."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return ""
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    return str(v4[0] if v4 else infos[0][4][0]) if infos else ""


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def probe(token_file: str, token: str, master_addr: str, port: int, self_name: str) -> dict:
    try:
        seen = Path(token_file).read_text().strip()
    except OSError:
        seen = None
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    return dict(hostname=socket.gethostname(), addresses=addresses(),
                token=seen == token, master=resolve(master_addr) if master_addr else "",
                port=port if port else free_port(), port_free=port_free(port) if port else True,
                self=resolve(self_name), ssh_address=ssh[2] if len(ssh) >= 3 else "")


def probe_main(argv: Sequence[str]) -> int:
    if len(argv) != 5 or not argv[3].isdigit():
        print("usage: python -m launcher.node probe TOKEN_FILE TOKEN MASTER_ADDR PORT SELF_NAME",
              file=sys.stderr)
        return 2
    print(json.dumps(probe(argv[0], argv[1], argv[2], int(argv[3]), argv[4])), flush=True)
    return 0


@dataclass
class Answer:
    """One node's answer (None fields: it did not answer)."""
    node: int
    host: str
    hostname: str
    addresses: list[str]
    token: bool
    master: str
    port: int
    port_free: bool
    self: str
    ssh_address: str

    @classmethod
    def parse(cls, node: int, host: str, stdout: str) -> "Answer | None":
        for line in reversed(stdout.splitlines()):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "addresses" in doc:
                try:
                    return cls(node, host, str(doc["hostname"]), list(doc["addresses"]),
                               bool(doc["token"]), str(doc["master"]), int(doc["port"]),
                               bool(doc["port_free"]), str(doc["self"]),
                               str(doc["ssh_address"]))
                except (KeyError, TypeError, ValueError):
                    return None
        return None

    def address(self) -> str:
        """This node's address as it names itself: its host name as it resolves here (when that
        is one of its own addresses), else the address its ssh session came in on, else its
        only address."""
        if self.self in self.addresses:
            return self.self
        if self.ssh_address in self.addresses:
            return self.ssh_address
        return self.addresses[0] if len(self.addresses) == 1 else ""
