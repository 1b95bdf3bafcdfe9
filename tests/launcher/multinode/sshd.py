"""Real sshd on the hosts of the netns cluster (tests/cluster/netns_up.sh), for the launch over
ssh: host and user keys made here under a directory of the test's own, each sshd listening only
on its host's private address, and an ssh client config (`ssh -F`) and known_hosts of the tests'
own: root's ~/.ssh is never read or written.

Besides node1 and node2 (port 22), the client config names hosts that fail the launch's
preflight one way each: sshds on node2 in mount namespaces of their own, with a tmpfs over the
output directory (the run directory is not shared), the interpreter's directory or the
checkout's launcher package; a port nobody listens on; a key the host does not accept; a host
key nobody recorded; node1 under a second name.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import REPO

ON_NODE = REPO / "tests" / "cluster" / "on_node.sh"


@dataclass
class Sshd:
    root: Path                    # keys, configs, the hidden directories
    ips: dict[str, str]           # node -> address
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def hidden_out(self) -> Path:
        """An output directory that node2-hidden-out does not see (a tmpfs over it there)."""
        return self.root / "hidden" / "runs"

    def option(self) -> str:
        """The `ssh` job key for the tests: their own client config."""
        return f"-F {self.config}"


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "packrun-test", "-f",
                    str(path)], check=True, capture_output=True)
    return (path.with_suffix(".pub")).read_text().strip()


# (alias, node, port, directory hidden by a tmpfs in that sshd's mount namespace)
def _instances(d: Sshd) -> list[tuple[str, str, int, Path | None]]:
    return [("node1", "node1", 22, None), ("node2", "node2", 22, None),
            ("node2-hidden-out", "node2", 2201, d.hidden_out),
            ("node2-no-python", "node2", 2202, Path(sys.executable).parent),
            ("node2-no-checkout", "node2", 2203, REPO / "launcher")]


def start(root: Path, ips: dict[str, str]) -> Sshd:
    d = Sshd(root, ips)
    d.hidden_out.mkdir(parents=True, exist_ok=True)
    host_pub = _keygen(root / "host_key")
    user_pub = _keygen(root / "id_user")
    _keygen(root / "id_other")  # a key no host accepts
    (root / "authorized_keys").write_text(user_pub + "\n")
    key = " ".join(host_pub.split()[:2])
    names = []
    for _, node, port, _ in _instances(d):
        names.append(ips[node] if port == 22 else f"[{ips[node]}]:{port}")
    (root / "known_hosts").write_text(f"{','.join(sorted(set(names)))} {key}\n")
    (root / "known_hosts_empty").write_text("")
    lines = []
    for alias, node, port, _ in _instances(d):
        lines += [f"Host {alias}", f"  HostName {ips[node]}", f"  Port {port}"]
    lines += ["Host node2-refuses", f"  HostName {ips['node2']}", "  Port 2299",
              "Host node2-nokey", f"  HostName {ips['node2']}", f"  IdentityFile {root}/id_other",
              "Host node2-unknown", f"  HostName {ips['node2']}",
              f"  UserKnownHostsFile {root}/known_hosts_empty",
              "Host node1-again", f"  HostName {ips['node1']}",
              "Host * !node2-nokey", f"  IdentityFile {root}/id_user",
              "Host *", "  User root", "  IdentitiesOnly yes",
              f"  UserKnownHostsFile {root}/known_hosts", "  GlobalKnownHostsFile /dev/null",
              "  StrictHostKeyChecking yes", "  LogLevel ERROR", "  ControlMaster no"]
    d.config.write_text("\n".join(lines) + "\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # Debian's sshd: its privilege separation directory
    try:
        for alias, node, port, hidden in _instances(d):
            conf = root / f"sshd_{alias}.conf"
            conf.write_text("\n".join([
                f"Port {port}", f"ListenAddress {ips[node]}", f"HostKey {root}/host_key",
                "PidFile none", f"AuthorizedKeysFile {root}/authorized_keys",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
                "ClientAliveInterval 5", "ClientAliveCountMax 3", "LogLevel ERROR"]) + "\n")
            mount = f"mount -t tmpfs packrun-test {shlex.quote(str(hidden))} && " \
                if hidden else ""
            with open(root / f"sshd_{alias}.log", "w") as log:
                d.procs.append(subprocess.Popen(
                    ["bash", str(ON_NODE), node, f"{mount}exec /usr/sbin/sshd -D -e -f {conf}"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        for alias, node, port, _ in _instances(d):
            _wait_listening(ips[node], port, root / f"sshd_{alias}.log")
    except BaseException:
        stop(d)
        raise
    return d


def _wait_listening(ip: str, port: int, log: Path, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no sshd on {ip}:{port}: {log.read_text()}") from None
            time.sleep(0.1)


def stop(d: Sshd) -> None:
    for p in d.procs:
        p.terminate()
    for p in d.procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    os.sync()
