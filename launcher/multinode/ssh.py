"""The one place that builds `ssh` command lines, and the grammar of the options a user may add.

packrun reaches other hosts only through the system's OpenSSH client, so a user's ~/.ssh/config
(aliases, keys, ports, ProxyJump) applies as it does for `ssh HOST`. Every command runs with
BatchMode (never a password prompt: a host that would ask fails at once), a connect timeout and
keep-alives (a lost host is noticed within seconds). The user's extra options (`ssh` job key or
`--ssh` flag, e.g. "-p 2222 -J bastion -F ~/.ssh/cluster") are checked here: only options that
choose where and how to connect pass; any option that runs a command on this machine
(ProxyCommand, LocalCommand, KnownHostsCommand, ...), forwards ports or changes what runs on the
far side is refused with one line naming it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from launcher.core.errors import UserError

CONNECT_TIMEOUT_S = 10
ALIVE_INTERVAL_S = 5   # ssh sends a keep-alive every 5 s ...
ALIVE_COUNT = 3        # ... and gives up after 3 unanswered: a lost host ends its session in ~15 s

# Exit statuses of the remote wrapper (remote_command): ssh itself fails with 255.
SSH_FAILED = 255
NO_PYTHON = 90
NO_CHECKOUT = 91

# Options with a value: -p PORT, -J JUMP, -F FILE, -i FILE, -l USER, -o KEY=VALUE.
_VALUE = re.compile(r"[A-Za-z0-9._,:@/~+%=*-]+")
_PATH = re.compile(r"[A-Za-z0-9._,:@/~+%=-]+")
_JUMP = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9_.:\[\]-]+(:[0-9]{1,5})?"
                   r"(,([A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9_.:\[\]-]+(:[0-9]{1,5})?)*")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_FLAGS = {"-4", "-6", "-C", "-q", "-v", "-vv", "-vvv"}
# -o keys that choose where and how to connect (lower case). Anything else is refused.
_KEYS = {k.lower() for k in (
    "Port", "User", "HostName", "IdentityFile", "IdentitiesOnly", "CertificateFile",
    "UserKnownHostsFile", "GlobalKnownHostsFile", "StrictHostKeyChecking", "HostKeyAlias",
    "CheckHostIP", "UpdateHostKeys", "HashKnownHosts", "ProxyJump", "ConnectTimeout",
    "ConnectionAttempts", "ServerAliveInterval", "ServerAliveCountMax", "TCPKeepAlive",
    "Compression", "LogLevel", "AddressFamily", "BindAddress", "PubkeyAuthentication",
    "PreferredAuthentications", "GSSAPIAuthentication", "Ciphers", "MACs", "KexAlgorithms",
    "HostKeyAlgorithms", "PubkeyAcceptedAlgorithms", "PubkeyAcceptedKeyTypes", "IPQoS")}
# Refused with a reason of their own (the rest: "not an option packrun passes on").
_RUNS_A_COMMAND = {k.lower() for k in (
    "ProxyCommand", "LocalCommand", "PermitLocalCommand", "KnownHostsCommand", "RemoteCommand",
    "Match", "Include", "SecurityKeyProvider", "PKCS11Provider", "SendEnv", "SetEnv")}
_OURS = {"batchmode"}
ALLOWED = ("-p PORT, -J [USER@]HOST[:PORT], -F FILE, -i FILE, -l USER, -o KEY=VALUE (connection "
           "settings such as Port, User, IdentityFile, ProxyJump, UserKnownHostsFile), -4, -6, "
           "-C, -q, -v")


@dataclass(frozen=True)
class SshOptions:
    """The user's extra options, checked: argv words to put before the host."""
    words: tuple[str, ...] = ()


def _bad(source: str, text: str) -> UserError:
    return UserError(f"{source}: {text}; allowed: {ALLOWED}")


def _check_value(source: str, flag: str, value: str) -> str:
    pattern = {"-p": re.compile(r"[0-9]{1,5}"), "-J": _JUMP, "-F": _PATH, "-i": _PATH,
               "-l": _USER}[flag]
    if not pattern.fullmatch(value) or (flag == "-p" and not 1 <= int(value) <= 65535):
        raise _bad(source, f"{flag} {value!r} is not a valid value for {flag}")
    return value


def _check_o(source: str, setting: str) -> str:
    key, eq, value = setting.partition("=")
    lowered = key.strip().lower()
    if not eq or not key or not value:
        raise _bad(source, f"-o {setting!r}: give -o KEY=VALUE")
    if lowered in _RUNS_A_COMMAND:
        raise UserError(f"{source}: -o {key} runs a command or changes what runs "
                        "(ProxyCommand, LocalCommand, KnownHostsCommand, RemoteCommand, Match, "
                        "Include, SendEnv, ... are refused); for a bastion use -J HOST "
                        "(ProxyJump)")
    if lowered in _OURS:
        raise UserError(f"{source}: -o {key}: packrun always runs ssh with BatchMode=yes (no "
                        "password prompts); set up key-based ssh instead")
    if lowered not in _KEYS:
        raise _bad(source, f"-o {key} is not a connection setting packrun passes on")
    if not _VALUE.fullmatch(value):
        raise _bad(source, f"-o {key}={value!r} holds characters packrun does not pass on")
    return f"{key}={value}"


def parse_options(text: str | Sequence[str], source: str = "key 'ssh'") -> SshOptions:
    """The checked options of `text` ("-p 2222 -J bastion", or already split words)."""
    if isinstance(text, str):
        if any(ord(c) < 32 for c in text):
            raise UserError(f"{source}: holds a control character; give options on one line")
        try:
            words = shlex.split(text)
        except ValueError as e:
            raise UserError(f"{source}: {text!r} does not split into words ({e})") from None
    else:
        words = list(text)
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word in _FLAGS:
            out.append(word)
            continue
        flag, attached = word[:2], word[2:]
        if flag not in ("-p", "-J", "-F", "-i", "-l", "-o"):
            raise _bad(source, f"{word!r} is not an ssh option packrun passes on")
        if attached:
            value = attached
        elif i < len(words):
            value = words[i]
            i += 1
        else:
            raise _bad(source, f"{flag} needs a value")
        if flag == "-o":
            out += ["-o", _check_o(source, value)]
        else:
            out += [flag, _check_value(source, flag, value)]
    return SshOptions(tuple(out))


def base_argv(options: SshOptions = SshOptions(), ssh: str = "ssh") -> list[str]:
    """`ssh` with packrun's settings. The user's options come first: for each setting ssh keeps
    the first value it gets, so theirs (ConnectTimeout, ServerAliveInterval) win; BatchMode,
    which they cannot set, is always on."""
    return [ssh, "-o", "BatchMode=yes", *options.words,
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}",
            "-o", f"ServerAliveCountMax={ALIVE_COUNT}"]


def remote_command(python: str, repo: str, args: Sequence[str]) -> str:
    """The command line ssh hands to the far side's login shell (whatever shell that is): /bin/sh
    runs `python -m launcher.node ARGS` from the checkout, after checking that the interpreter
    (exit NO_PYTHON) and the checkout (exit NO_CHECKOUT) are there at the same paths."""
    q = shlex.quote
    script = (f"test -x {q(python)} || exit {NO_PYTHON}; "
              f"test -f {q(repo + '/launcher/node/__main__.py')} || exit {NO_CHECKOUT}; "
              f"cd {q(repo)} || exit {NO_CHECKOUT}; "
              f"PYTHONPATH={q(repo)} exec {q(python)} -m launcher.node {shlex.join(args)}")
    return shlex.join(["/bin/sh", "-c", script])


def command(host: str, python: str, repo: str, args: Sequence[str],
            options: SshOptions = SshOptions()) -> list[str]:
    """`ssh [options] -- HOST REMOTE`: run `python -m launcher.node ARGS` on HOST."""
    if not host or host.startswith("-"):
        raise UserError(f"host {host!r}: give a host name or ssh alias")
    return base_argv(options) + ["--", host, remote_command(python, repo, args)]


def resolve_argv(host: str, options: SshOptions = SshOptions()) -> list[str]:
    """`ssh -G HOST`: the settings ssh would use for HOST (its HostName, after ~/.ssh/config)."""
    return ["ssh", "-G", *options.words, "--", host]


def explain_failure(host: str, code: int, stderr: str, python: str = "",
                    repo: str = "") -> str:
    """One line: why `ssh HOST ...` (the remote wrapper) failed with `code`, and the fix."""
    said = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = said[-1] if said else f"exit status {code}"
    if code == NO_PYTHON:
        return (f"{host}: the interpreter {python} is not there; install packrun at the same "
                "path on every node (the same venv, e.g. on shared storage)")
    if code == NO_CHECKOUT:
        return (f"{host}: the packrun checkout {repo} is not there; put it at the same path on "
                "every node (shared storage, or the same clone everywhere)")
    text = "\n".join(said)
    if "Host key verification failed" in text or "No ED25519 host key is known" in text \
            or ("host key for" in text.lower() and "not known" in text.lower()):
        return (f"{host}: its host key is unknown and ssh runs with BatchMode, which cannot ask; "
                f"connect once by hand (ssh {host}) or add its key to known_hosts (ssh-keyscan "
                f"{host} >> ~/.ssh/known_hosts)")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (f"{host}: its host key changed since it was recorded in known_hosts; check why, "
                f"then ssh-keygen -R {host}")
    if "Permission denied" in text:
        return (f"{host}: ssh asks for a password or refuses the key ({last}); set up passwordless "
                f"ssh: ssh-copy-id {host}, or name the key (-i FILE in the ssh key)")
    if "Connection refused" in text:
        return (f"{host}: refuses ssh connections ({last}); is sshd running there, on that port "
                "(-p PORT in the ssh key)?")
    if "Could not resolve hostname" in text:
        return f"{host}: does not resolve ({last}); use its address or an alias in ~/.ssh/config"
    if any(s in text for s in ("timed out", "No route to host", "Network is unreachable")):
        return f"{host}: unreachable ({last}); check the address and that it is up"
    return f"{host}: ssh failed with exit status {code} ({last})"
