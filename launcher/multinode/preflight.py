"""Preflight of a launch over ssh, before anything starts: every node is asked (over ssh, or
here for node 0 on this machine) with `python -m launcher.node probe` (launcher/multinode/
probe.py), and the answers are judged together. Each problem is one line naming the host and
the fix (a UserError, exit 2): a host unreachable, asking for a password or with an unknown host
key (ssh.explain_failure); the interpreter or the checkout missing there; the output directory
not visible at the same path (a token file written here, read back there); master_addr
resolving to a loopback address, or to an address that is not node 0's, on some node; the
master port busy on node 0; two hosts that are one machine.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from launcher.core.errors import UserError
from launcher.core.rundir.names import TOKEN_PREFIX
from launcher.multinode import ssh
from launcher.multinode.probe import Answer, addresses, is_loopback, resolve

PROBE_TIMEOUT_S = ssh.CONNECT_TIMEOUT_S + 30


@dataclass
class Plan:
    hosts: list[str]          # as ssh reaches them
    node0_local: bool         # node 0 is this machine
    addresses: list[str]      # each node's own address
    master_addr: str
    master_port: int


def is_local(host: str, options: ssh.SshOptions) -> bool:
    """Whether `host` (an ssh alias or name) is this machine: the HostName ssh would connect to
    (`ssh -G`, after ~/.ssh/config) resolves here to one of this machine's addresses or to a
    loopback address."""
    try:
        r = subprocess.run(ssh.resolve_argv(host, options), capture_output=True, text=True,
                           timeout=10, stdin=subprocess.DEVNULL)
        name = next((line.split(None, 1)[1] for line in r.stdout.splitlines()
                     if line.startswith("hostname ")), host) if r.returncode == 0 else host
    except (OSError, subprocess.TimeoutExpired):
        name = host
    ip = resolve(name)
    return bool(ip) and (is_loopback(ip) or ip in addresses())


def node_argv(k: int, plan_hosts: list[str], local0: bool, options: ssh.SshOptions,
              python: str, repo: str, args: list[str]) -> list[str]:
    """How node k runs `python -m launcher.node ARGS`: here for node 0 on this machine, else
    over ssh."""
    if k == 0 and local0:
        return [python, "-m", "launcher.node", *args]
    return ssh.command(plan_hosts[k], python, repo, args, options)


def ask(hosts: list[str], local0: bool, options: ssh.SshOptions, python: str, repo: str,
        folder: Path, master: str, port: int) -> list[Answer]:
    """Every node's answer, asked in parallel; the first node's problem (in node order) as a
    UserError."""
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    token_file = folder / f"{TOKEN_PREFIX}{token[:12]}"
    token_file.write_text(token + "\n")

    def one(k: int) -> Answer | str:
        argv = node_argv(k, hosts, local0, options, python, repo,
                         ["probe", str(token_file), token, master, str(port), hosts[k]])
        env = dict(os.environ, PYTHONPATH=repo) if k == 0 and local0 else None
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                               stdin=subprocess.DEVNULL, cwd=repo, env=env)
        except subprocess.TimeoutExpired:
            return (f"{hosts[k]}: no answer within {PROBE_TIMEOUT_S} s over ssh; check that it "
                    "is up and that ssh to it works without a prompt")
        if r.returncode != 0:
            return ssh.explain_failure(hosts[k], r.returncode, r.stderr, python, repo)
        answer = Answer.parse(k, hosts[k], r.stdout)
        if answer is None:
            said = (r.stdout + r.stderr).strip().splitlines() or ["no output"]
            return (f"{hosts[k]}: did not answer as packrun's probe ({said[-1]}); is the same "
                    "packrun installed there?")
        return answer
    try:
        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            answers = list(pool.map(one, range(len(hosts))))
    finally:
        token_file.unlink(missing_ok=True)
    for a in answers:
        if isinstance(a, str):
            raise UserError(a)
    return [a for a in answers if isinstance(a, Answer)]


def judge(answers: list[Answer], folder: Path, master: str, master_given: bool,
          port: int) -> tuple[list[str], str, int]:
    """(each node's address, master_addr, master_port) from the answers, or the first problem
    as a UserError."""
    here = socket.gethostname()
    for a in answers:
        if not a.token:
            raise UserError(f"{a.host}: {folder} is not visible there at the same path (a file "
                            f"written there from {here} is not there on {a.host}); put "
                            "output_dir on storage every node mounts at the same path (NFS, "
                            "Lustre, ...)")
    for i, a in enumerate(answers):
        for b in answers[i + 1:]:
            common = sorted(set(a.addresses) & set(b.addresses))
            if common:
                raise UserError(f"{a.host} and {b.host} are the same machine (both have address "
                                f"{common[0]}); list each machine once in hosts")
    node0 = answers[0]
    if master_given:
        for a in answers:
            if not a.master:
                raise UserError(f"{a.host}: master_addr '{master}' does not resolve there; set "
                                "master_addr to node 0's IP address or a name every node resolves")
            if is_loopback(a.master):
                raise UserError(f"{a.host}: master_addr '{master}' resolves to {a.master} there, "
                                "a loopback address the other nodes cannot reach; set master_addr "
                                f"to node 0's network address ({', '.join(node0.addresses)})")
            if a.master not in node0.addresses:
                raise UserError(f"{a.host}: master_addr '{master}' resolves to {a.master} there, "
                                f"which is not an address of node 0 ({node0.host}: "
                                f"{', '.join(node0.addresses) or 'none'}); set master_addr to "
                                "one of those, or leave it \"\" (node 0's own address)")
    addrs = [a.address() for a in answers]
    for a, addr in zip(answers, addrs):
        if not addr:
            raise UserError(f"{a.host}: cannot tell its address (it has "
                            f"{', '.join(a.addresses) or 'none'}); list it by IP address in hosts")
    if port and not node0.port_free:
        raise UserError(f"{node0.host}: the master port {port} is busy there (another job's "
                        "scheduler?); set master_port to a free port, or 0 to pick one")
    return addrs, master if master_given else addrs[0], port or node0.port
