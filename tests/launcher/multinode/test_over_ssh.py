"""A job on two servers from one command, for real: `packrun run --nodes=2 --hosts=...` over
real sshd on the two hosts of the netns cluster (tests/cluster/netns_up.sh; sshd: sshd.py, with
the tests' own keys, client config and known_hosts: root's ~/.ssh is never used).

packrun runs on node1 (node 0 starts locally, node 1 over ssh) or, for the rank table, from the
machine outside the hosts (both nodes over ssh, as from a login node). Every test checks that
nothing of the job is left on either host. Jobs are the tiny CPU job (one worker per host).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.core.rundir.names import FAULT_ENV, NODES_PLAN, node_state
from tests.helpers import (
    REPO,
    attempt_shown,
    digests,
    need_tool,
    packrun_env,
    processes_of,
    run_dir_of,
    shown,
    stub_repo,
    unavailable,
    wait_for,
    write_tiny_job,
)
from tests.launcher.multinode import sshd
from tests.launcher.slurm.test_multinode import Cluster, hosts_digest, read_env, workers

pytestmark = pytest.mark.cluster("netns")

CLUSTER = REPO / "tests" / "cluster"
STATE = Path(os.environ.get("PACKRUN_NETNS_DIR", "/tmp/packrun-netns"))
TWO_NODES = ("--nodes=2", "--cards_per_node=1")


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        unavailable("the netns cluster needs root (network namespaces, a bridge, bind mounts)")
    for tool in ("ip", "nsenter", "unshare", "sshd", "ssh", "ssh-keygen", "slurmd"):
        need_tool(tool, "for the two-host network-namespace cluster with sshd")
    before = hosts_digest()
    up = subprocess.run(["bash", str(CLUSTER / "netns_up.sh")], capture_output=True, text=True,
                        timeout=180)
    if up.returncode != 0 and "Operation not permitted" in up.stderr:
        unavailable(f"netns_up.sh is not permitted here: {up.stderr.strip().splitlines()[-1]}")
    assert up.returncode == 0, f"netns_up.sh failed:\n{up.stdout}{up.stderr}"
    yield Cluster(read_env(STATE / "netns.env"))
    down = subprocess.run(["bash", str(CLUSTER / "netns_down.sh")], capture_output=True,
                          text=True, timeout=180)
    assert down.returncode == 0, down.stderr
    assert hosts_digest() == before, "the machine's /etc/hosts changed"


@pytest.fixture(scope="module")
def ssh(cluster, tmp_path_factory):
    d = sshd.start(tmp_path_factory.mktemp("ssh"), cluster.ips)
    yield d
    sshd.stop(d)


@pytest.fixture(scope="module")
def job(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("oversh")
    return write_tiny_job(d / "mn.toml", digits_2class, lr=0.02, num_parallel_workers=1,
                          epochs=2)


REFERENCE: dict = {}  # the uninterrupted run's final digests, for the restart test


@pytest.fixture(scope="module")
def reference(cluster, ssh, job, tmp_path_factory):
    """The final digests of an uninterrupted two-node run: the resumed run's of the Ctrl-C test
    (which runs first), else (a test run alone) a run of its own."""
    if "digests" not in REFERENCE:
        out = tmp_path_factory.mktemp("reference")
        code, text = run_on("node1", ssh, "run", job, *TWO_NODES, "--hosts=node1,node2",
                            f"--output_dir={out}")
        assert code == 0, shown(text)
        REFERENCE["digests"] = digests(run_dir_of(text))
    return REFERENCE["digests"]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def start_on(node: str, ssh: sshd.Sshd | None, args, out: Path, env: dict | None = None):
    """`packrun ARGS --ssh=...` started on host `node` (its output to `out`; no --ssh when
    `ssh` is None); the process is packrun itself (each shell on the way execs the next)."""
    argv = [sys.executable, "-m", "launcher.cli.main", *map(str, args)] + \
        ([f"--ssh={ssh.option()}"] if ssh else [])
    command = f"cd {REPO} && exec {subprocess.list2cmdline(argv)}"
    with open(out, "w") as f:
        return subprocess.Popen(["bash", str(CLUSTER / "on_node.sh"), node, command], stdout=f,
                                stderr=subprocess.STDOUT, env=packrun_env(env))


def run_on(node: str, ssh: sshd.Sshd | None, *args, timeout=600) -> tuple[int, str]:
    out = Path(f"/tmp/packrun-oversh-{os.getpid()}.out")
    try:
        proc = start_on(node, ssh, args, out)
        code = proc.wait(timeout=timeout)
        return code, out.read_text()
    finally:
        out.unlink(missing_ok=True)


def job_left(cluster: Cluster, under: Path) -> list[str]:
    """Processes of the job on the hosts or here: anything naming a run directory under `under`,
    and on the hosts anything but their daemons (slurmd, the listening sshd)."""
    found = [] if not under.exists() else processes_of(under)
    hosts = cluster.node_of_namespace()
    for p in psutil.process_iter(["cmdline", "name"]):
        try:
            on_host = os.stat(f"/proc/{p.pid}/ns/net").st_ino in hosts
        except OSError:
            continue
        cmd = p.info["cmdline"] or []
        daemon = p.info["name"] == "slurmd" or "[listener]" in " ".join(cmd)
        if on_host and not daemon:
            found.append(f"{p.pid} {' '.join(cmd)}")
    return found


def assert_nothing_left(cluster: Cluster, under: Path, within_s: float = 30):
    deadline = time.monotonic() + within_s
    while (left := job_left(cluster, under)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left running: {left}"


def node_states(run_dir: Path) -> dict[int, dict]:
    return {k: json.loads((run_dir / node_state(k)).read_text()) for k in (0, 1)}


def run_dir_under(out: Path) -> Path:
    found = wait_for(lambda: sorted(out.glob(f"*/{NODES_PLAN}")), 120, "the run directory")
    return found[-1].parent.parent


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------

def both_nodes_training(runs: Path) -> Path:
    """The run directory under `runs`, once both nodes' state files say training."""
    run_dir = run_dir_under(runs)
    paths = [run_dir / node_state(k) for k in (0, 1)]
    wait_for(lambda: all(p.exists() and '"training"' in p.read_text() for p in paths), 300,
             "both nodes training")
    return run_dir


def signal_once_both_train(cluster, ssh, job, tmp_path, sig):
    """A 2-node run started on node1, sent `sig` once both nodes train: (its run directory, its
    exit status, the seconds until nothing of the job was left on either host, its output)."""
    out = tmp_path / "run.out"
    proc = start_on("node1", ssh, ["run", job, *TWO_NODES, "--hosts=node1,node2",
                                   f"--output_dir={tmp_path / 'runs'}"], out)
    try:
        run_dir = both_nodes_training(tmp_path / "runs")
        t0 = time.monotonic()
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=60)
        assert_nothing_left(cluster, tmp_path, within_s=30)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    return run_dir, code, took, out.read_text()


def test_ctrl_c_stops_every_node_and_resume_trains_both_hosts_to_the_same_weights(
        cluster, ssh, job, tmp_path):
    """Ctrl-C on node1 while the workers start (both nodes report training, long before the
    first step) stops every node; `--resume` of the multi-node run directory then runs the whole
    job (no last.ckpt yet: from the start) on both hosts to equal final weights: the reference
    of the restart test."""
    run_dir, code, took, text = signal_once_both_train(cluster, ssh, job, tmp_path, signal.SIGINT)
    assert took < 20, f"the nodes took {took:.1f} s to stop"
    assert code == 130, shown(text)
    assert "SIGINT: stopping every node" in text
    assert [s["state"] for s in node_states(run_dir).values()] == ["stopped", "stopped"]
    print(f"SIGINT: every node stopped within {took:.1f} s")

    t0 = time.monotonic()
    code, text = run_on("node1", None, "run", "--resume", run_dir)   # ssh options: the plan's
    assert code == 0, shown(text)
    for line in ("packrun: node 0 (node1): started", "packrun: node 1 (node2): started",
                 "packrun: node 0 (node1): training", "packrun: node 1 (node2): training",
                 "packrun: node 0 (node1): finished", "packrun: node 1 (node2): finished",
                 "started here and over ssh"):
        assert line in text, shown(text)
    assert "rank 0: final weights sha256" in text          # rank 0's progress on the console
    d = digests(run_dir)
    assert d[0] == d[1], f"the hosts ended with different weights: {d}"
    REFERENCE["digests"] = d
    states = node_states(run_dir)
    assert [states[k]["hostname"] for k in (0, 1)] == ["node1", "node2"]   # where each ran
    assert [states[k]["state"] for k in (0, 1)] == ["finished", "finished"]
    plan = json.loads((run_dir / NODES_PLAN).read_text())
    assert plan["addresses"] == [cluster.ips["node1"], cluster.ips["node2"]]
    assert json.loads((run_dir / "job.json").read_text())["spec"]["master_addr"] == \
        cluster.ips["node1"]
    # status and logs, from the run directory's files
    status = subprocess.run([sys.executable, "-m", "launcher.cli.main", "status", str(run_dir)],
                            capture_output=True, text=True, cwd=REPO, env=packrun_env())
    assert "node 1 (node2): finished" in status.stdout, status.stdout + status.stderr
    logs = subprocess.run([sys.executable, "-m", "launcher.cli.main", "logs", str(run_dir)],
                          capture_output=True, text=True, cwd=REPO, env=packrun_env())
    assert re.search(r"^\[node1\] packrun: node 1 of 2: msrun with 1 worker", logs.stdout, re.M), \
        logs.stdout[-3000:]
    assert_nothing_left(cluster, tmp_path)
    print(f"two nodes over ssh, resumed to the end: {time.monotonic() - t0:.1f} s")


def test_a_killed_rank_on_node2_stops_both_nodes_and_the_restart_ends_as_uninterrupted(
        cluster, ssh, job, tmp_path, reference):
    fault = json.dumps({FAULT_ENV: "kill:rank=1:epoch=2:step=1"})   # SIGKILL, first attempt
    out = tmp_path / "run.out"
    proc = start_on("node1", ssh, ["run", job, *TWO_NODES, "--hosts=node1,node2",
                                   f"--output_dir={tmp_path / 'runs'}", "--max_restarts=1",
                                   f"--env={fault}"], out)
    try:
        first = wait_for(lambda: (w := workers(tmp_path, cluster)).get(1) and w.get(0) and w,
                         300, "both ranks")
        assert first[1][1] == "node2" and first[0][1] == "node1"
        pids = {first[0][0], first[1][0]}
        wait_for(lambda: not psutil.pid_exists(first[1][0]), 300, "rank 1 to be killed")
        killed = time.monotonic()
        wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() !=
                                 psutil.STATUS_ZOMBIE for p in pids), 60, "both nodes down")
        down = time.monotonic() - killed
        code = proc.wait(timeout=600)
    finally:
        proc.kill()
    text = out.read_text()
    assert down < 15, f"the other node went down {down:.1f} s after the kill"
    assert code == 0, shown(text)
    run_dir = run_dir_of(text)
    record = json.loads((run_dir / "logs" / "attempt_1" / "failure.json").read_text())
    assert (record["node"], record["host"], record["rank"], record["signal"]) == \
        (1, "node2", 1, 9), attempt_shown(run_dir, 1, text)
    assert "node 1 (node2): failed: rank 1 was killed by signal 9" in text, shown(text)
    assert "restarting from last.ckpt (attempt 2 of 2)" in text
    assert digests(run_dir) == reference
    assert_nothing_left(cluster, tmp_path)
    print(f"both nodes down {down:.1f} s after the kill")


def test_kill_9_of_packrun_on_node1_stops_every_node(cluster, ssh, job, tmp_path):
    """The nodes end with their sessions: nothing of packrun's is left to stop them."""
    run_dir, code, took, _ = signal_once_both_train(cluster, ssh, job, tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert took < 20, f"the nodes took {took:.1f} s to stop"
    states = node_states(run_dir)
    assert [s["state"] for s in states.values()] == ["stopped", "stopped"], states
    assert all(s["reason"] == "its session ended" for s in states.values())
    print(f"kill -9 of packrun: every node stopped within {took:.1f} s")


def test_a_host_lost_mid_run_counts_as_its_node_failing(cluster, ssh, job, tmp_path):
    """node2's network goes down while both nodes train: ssh's keep-alives end its session
    (about 15 s), packrun names node 1 as failed and stops node 0; node2's sshd ends the session
    on its side too (ClientAliveInterval), so its node program stops as well."""
    out = tmp_path / "run.out"
    proc = start_on("node1", ssh, ["run", job, *TWO_NODES, "--hosts=node1,node2", "--epochs=50",
                                   "--max_restarts=0", f"--output_dir={tmp_path / 'runs'}"], out)
    link = ["ip", "-n", cluster.netns["node2"], "link", "set", "eth0"]
    try:
        run_dir = both_nodes_training(tmp_path / "runs")
        t0 = time.monotonic()
        subprocess.run(link + ["down"], check=True)
        code = proc.wait(timeout=120)
        took = time.monotonic() - t0
    finally:
        subprocess.run(link + ["up"], check=True)
        proc.kill()
    text = out.read_text()
    assert code == 255, shown(text)
    assert "node 1 (node2): its ssh session ended without a report" in text, shown(text)
    assert node_states(run_dir)[0]["state"] == "stopped"
    record = json.loads((run_dir / "failure.json").read_text())
    assert (record["node"], record["host"]) == (1, "node2"), record
    assert took < 60, f"packrun took {took:.0f} s to give the lost node up"
    assert_nothing_left(cluster, tmp_path, within_s=45)
    print(f"a lost host: packrun ended {took:.1f} s after its network went down")


STUB_WORKER = """import json, os, socket, sys
rec = {k: os.environ.get(k) for k in ("RANK_ID", "DEVICE_ID", "RANK_SIZE", "RANK_TABLE_FILE")}
rec["host"] = socket.gethostname()
run_dir = sys.argv[1]
with open(os.path.join(run_dir, "rank_%s.json" % os.environ["RANK_ID"]), "w") as f:
    json.dump(rec, f)
"""


def test_a_rank_table_launch_from_a_machine_outside_the_hosts(cluster, ssh, digits_2class,
                                                              tmp_path):
    """Both nodes over ssh (from the root namespace, as from a login node), the rank table's
    server ids the hosts' own addresses; a stand-in worker (this machine has no Ascend cards)."""
    repo = stub_repo(tmp_path, STUB_WORKER)
    job = write_tiny_job(tmp_path / "rt.toml", digits_2class, device="Ascend",
                         launcher="rank_table", device_ips="192.168.1.1,192.168.2.1",
                         node_checks="off",   # no npu-smi or hccn_tool on these hosts
                         output_dir=str(tmp_path / "runs"))
    script = ("import sys\nfrom launcher.core.spec import load_job\n"
              "from launcher.multinode.run import new_run\n"
              f"sys.exit(new_run(load_job({str(job)!r}, {{'nodes': 2, 'cards_per_node': 1, "
              f"'hosts': 'node1,node2', 'ssh': {ssh.option()!r}}}), repo={str(repo)!r})"
              ".execute())\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=REPO, env=packrun_env(), timeout=300)
    assert r.returncode == 0, shown(r)
    for k, host in enumerate(("node1", "node2")):     # both over ssh: node 0 is not here
        assert f"packrun: node {k} ({host}): finished" in r.stdout, shown(r)
    assert json.loads((run_dir_of(r.stdout) / NODES_PLAN).read_text())[
        "node0_local"] is False
    run_dir = run_dir_of(r.stdout)
    table = json.loads((run_dir / "rank_table.json").read_text())
    assert [s["server_id"] for s in table["server_list"]] == [cluster.ips["node1"],
                                                               cluster.ips["node2"]]
    got = {r: json.loads((run_dir / f"rank_{r}.json").read_text()) for r in (0, 1)}
    assert [got[r]["host"] for r in (0, 1)] == ["node1", "node2"]
    assert all(g["RANK_SIZE"] == "2" and g["DEVICE_ID"] == "0" for g in got.values())
    assert_nothing_left(cluster, tmp_path)


# ---------------------------------------------------------------------------------------------
# Preflight: one line naming the host and the fix, exit 2, nothing written, nothing started
# ---------------------------------------------------------------------------------------------

PREFLIGHT = {
    "a host refusing ssh": (["--hosts=node1,node2-refuses"],
                            "node2-refuses: refuses ssh connections"),
    "a password or a refused key": (["--hosts=node1,node2-nokey"],
                                    "node2-nokey: ssh asks for a password or refuses the key"),
    "an unknown host key": (["--hosts=node1,node2-unknown"],
                            "node2-unknown: its host key is unknown and ssh runs with BatchMode"),
    "no interpreter": (["--hosts=node1,node2-no-python"],
                       f"node2-no-python: the interpreter {sys.executable} is not there"),
    "no checkout": (["--hosts=node1,node2-no-checkout"],
                    f"node2-no-checkout: the packrun checkout {REPO} is not there"),
    "the run directory not shared": (["--hosts=node1,node2-hidden-out", "HIDDEN"],
                                     ("node2-hidden-out: {hidden} is not visible there at the "
                                     "same path")),
    "one machine twice": (["--hosts=node1,node1-again"],
                          "node1 and node1-again are the same machine (both have address"),
    "a loopback master": (["--hosts=node1,node2", "--master_addr=localhost"],
                          ("node1: master_addr 'localhost' resolves to 127.0.0.1 there, a "
                          "loopback address")),
    "a master that is another host": (["--hosts=node1,node2", "--master_addr=node2"],
                                      ("node1: master_addr 'node2' resolves to {node2} there, "
                                      "which is not an address of node 0")),
    "a busy master port": (["--hosts=node1,node2", "--master_port=PORT", "BUSY"],
                           "node1: the master port PORT is busy there"),
}


@pytest.mark.parametrize("case", list(PREFLIGHT))
def test_preflight_over_ssh(cluster, ssh, job, tmp_path, case):
    flags, said = PREFLIGHT[case]
    out = tmp_path / "runs"
    if "HIDDEN" in flags:
        out = ssh.hidden_out / case.replace(" ", "_")
    flags = [f for f in flags if f not in ("HIDDEN", "BUSY")] + [f"--output_dir={out}"]
    said = said.format(hidden=out, node2=cluster.ips["node2"])
    busy = None
    if "BUSY" in PREFLIGHT[case][0]:   # a listener on node1, on a port it picks
        busy = subprocess.Popen(["bash", str(CLUSTER / "on_node.sh"), "node1",
                                 (f"exec {sys.executable} -c 'import socket, time; s = "
                                 "socket.socket(); s.bind((\"0.0.0.0\", 0)); s.listen(); "
                                 "print(s.getsockname()[1], flush=True); time.sleep(120)'")],
                                stdout=subprocess.PIPE, text=True)
        port = int(busy.stdout.readline())
        flags = [f"--master_port={port}" if f == "--master_port=PORT" else f for f in flags]
        said = said.replace("PORT", str(port))
    try:
        t0 = time.monotonic()
        code, text = run_on("node1", ssh, "run", job, *TWO_NODES, *flags, timeout=120)
        took = time.monotonic() - t0
    finally:
        if busy:
            busy.kill()
            busy.wait()
    errors = [line for line in text.splitlines() if line.startswith("packrun: error: ")]
    assert code == 2 and len(errors) == 1, shown(text)
    assert errors[0].startswith(f"packrun: error: {said}"), errors[0]
    assert "Traceback" not in text
    assert not (out.exists() and [p for p in out.iterdir()]), "a run directory was written"
    assert_nothing_left(cluster, tmp_path)
    print(f"{case}: {took:.1f} s")
