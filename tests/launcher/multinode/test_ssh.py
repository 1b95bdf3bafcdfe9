"""The ssh command lines packrun builds and the grammar of the options a user may add: only
where-and-how-to-connect options pass; anything that runs a command here, forwards ports or
changes what runs there is refused with one line naming it."""

import subprocess
import sys

import pytest

from launcher.core.errors import UserError
from launcher.multinode import ssh
from tests.helpers import REPO

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, words", [
    ("", []),
    ("-p 2222", ["-p", "2222"]),
    ("-p2222 -J admin@bastion:2022", ["-p", "2222", "-J", "admin@bastion:2022"]),
    ("-F ~/.ssh/cluster -i /keys/id_ed25519 -l alice",
     ["-F", "~/.ssh/cluster", "-i", "/keys/id_ed25519", "-l", "alice"]),
    ("-o Port=2222 -oUserKnownHostsFile=/tmp/kh -o ProxyJump=a,b -4 -C -q",
     ["-o", "Port=2222", "-o", "UserKnownHostsFile=/tmp/kh", "-o", "ProxyJump=a,b", "-4", "-C",
      "-q"]),
    ("-o 'StrictHostKeyChecking=accept-new'", ["-o", "StrictHostKeyChecking=accept-new"]),
])
def test_connection_options_pass(text, words):
    assert list(ssh.parse_options(text).words) == words


@pytest.mark.parametrize("text, said", [
    ("-o ProxyCommand=nc %h %p", "-o ProxyCommand runs a command"),
    ("-oProxyCommand=evil", "-o ProxyCommand runs a command"),
    ("-o proxycommand=evil", "-o proxycommand runs a command"),
    ("-o LocalCommand=touch /tmp/x", "-o LocalCommand runs a command"),
    ("-o PermitLocalCommand=yes", "-o PermitLocalCommand runs a command"),
    ("-o KnownHostsCommand=/bin/evil", "-o KnownHostsCommand runs a command"),
    ("-o RemoteCommand=reboot", "-o RemoteCommand runs a command"),
    ("-o Match=exec", "-o Match runs a command"),
    ("-o BatchMode=no", "packrun always runs ssh with BatchMode=yes"),
    ("-L 8080:localhost:80", "'-L' is not an ssh option packrun passes on"),
    ("-R 9000:x:22", "'-R' is not an ssh option"),
    ("-D 1080", "'-D' is not an ssh option"),
    ("-W host:22", "'-W' is not an ssh option"),
    ("-t", "'-t' is not an ssh option"),
    ("-S /tmp/sock", "'-S' is not an ssh option"),
    ("reboot", "'reboot' is not an ssh option"),
    ("-p", "-p needs a value"),
    ("-p 70000", "-p '70000' is not a valid value"),
    ("-p 22;reboot", "-p '22;reboot' is not a valid value"),
    ("-J 'a b'", "is not a valid value for -J"),
    ("-o Foo=bar", "-o Foo is not a connection setting"),
    ("-o User=$(id)", "holds characters packrun does not pass on"),
    ("-o Port", "give -o KEY=VALUE"),
    ("-p '2222", "does not split into words"),
    ("-p 22\n-v", "control character"),
])
def test_options_that_run_commands_or_do_more_are_refused(text, said):
    with pytest.raises(UserError, match=r"^key 'ssh': ") as e:
        ssh.parse_options(text)
    assert said in str(e.value)
    assert "\n" not in str(e.value)


def test_batchmode_always_and_the_users_options_before_packruns_own():
    argv = ssh.command("node2", "/venv/bin/python", "/src/packrun", ["hostnames", "a"],
                       ssh.parse_options("-o ConnectTimeout=3 -p 2222"))
    assert argv[:3] == ["ssh", "-o", "BatchMode=yes"]
    # ssh keeps the first value of a setting: the user's ConnectTimeout wins over packrun's
    assert argv.index("ConnectTimeout=3") < argv.index(f"ConnectTimeout={ssh.CONNECT_TIMEOUT_S}")
    assert f"ServerAliveInterval={ssh.ALIVE_INTERVAL_S}" in argv
    assert argv[-3:-1] == ["--", "node2"]          # a host is never read as an option


def test_a_host_that_looks_like_an_option_is_refused():
    with pytest.raises(UserError, match="give a host name"):
        ssh.command("-oProxyCommand=x", "/p", "/r", [])


def run_remote(python: str, repo: str, args: list[str]) -> subprocess.CompletedProcess:
    """What sshd does with the command line: the login shell runs it."""
    return subprocess.run(["bash", "-c", ssh.remote_command(python, repo, args)],
                          capture_output=True, text=True, timeout=60)


def test_the_remote_command_runs_the_node_entry_point_with_its_arguments_intact():
    r = run_remote(sys.executable, str(REPO), ["hostnames", "it's[1-2]"])
    assert (r.returncode, r.stdout) == (0, "it's1\nit's2\n"), r.stderr
    r = run_remote(sys.executable, str(REPO), ["hostnames", "a $(touch x)"])  # one word, unrun
    assert r.returncode == 2 and "hostlist 'a $(touch x)': contains whitespace" in r.stderr


def test_a_missing_interpreter_or_checkout_is_its_own_exit_status(tmp_path):
    assert run_remote(str(tmp_path / "python"), str(REPO), ["x"]).returncode == ssh.NO_PYTHON
    assert run_remote(sys.executable, str(tmp_path), ["x"]).returncode == ssh.NO_CHECKOUT


# What OpenSSH 9.2 prints for each (seen on the test cluster).
@pytest.mark.parametrize("code, stderr, said", [
    (255, "ssh: connect to host 10.77.0.12 port 2299: Connection refused",
     "node2: refuses ssh connections"),
    (255, "root@10.77.0.12: Permission denied (publickey).",
     "node2: ssh asks for a password or refuses the key"),
    (255, ("No ED25519 host key is known for 10.77.0.12 and you have requested strict "
           "checking.\nHost key verification failed."), "node2: its host key is unknown"),
    (255, "ssh: Could not resolve hostname node2: Name or service not known",
     "node2: does not resolve"),
    (255, "ssh: connect to host 10.77.0.12 port 22: Connection timed out", "node2: unreachable"),
    (ssh.NO_PYTHON, "", "node2: the interpreter /venv/bin/python is not there"),
    (ssh.NO_CHECKOUT, "", "node2: the packrun checkout /src/packrun is not there"),
    (255, "kex_exchange_identification: read: Connection reset by peer",
     "node2: ssh failed with exit status 255 (kex_exchange_identification"),
])
def test_each_ssh_failure_is_one_line_naming_the_host_and_the_fix(code, stderr, said):
    line = ssh.explain_failure("node2", code, stderr, "/venv/bin/python", "/src/packrun")
    assert line.startswith(said) and "\n" not in line
