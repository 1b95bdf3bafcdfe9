"""Multi-node for real: two hosts in network namespaces, jobs that cross the network between them.

tests/cluster/netns_up.sh starts the cluster (this module does, and netns_down.sh at the end):
hosts node1 (10.77.0.11) and node2 (10.77.0.12) on a private bridge with no route out, each with
its own host name and hosts file, a slurmd on each and slurmctld in the root namespace. Every
job runs one CPU worker per host (resnet18 at 32 px on the digits fixture):
- `packrun submit --nodes=2` through that Slurm;
- the rendered per-node command (`bash RUN_DIR/msrun.sh NODE_RANK`) run on each host by hand;
- mpirun.sh on node1, Open MPI reaching node2 through tests/cluster/on_node.sh as its rsh agent;
- a worker killed on node2; a master address that does not resolve.
Which host a rank ran on is read from its process: its network namespace is its host.

Needs root, iproute2, util-linux, slurmctld, slurmd, slurm-client, munge (and openmpi-bin for
the mpirun test). Where they are missing the tests skip saying so; with CI=true they fail.
"""

import hashlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from launcher.core import rank_env as ranks
from launcher.core.rundir.names import SLURM_JOB_ID
from tests.helpers import (
    REPO,
    digests,
    need_tool,
    packrun_argv,
    packrun_env,
    processes_of,
    run_dir_of,
    shown,
    unavailable,
    wait_for,
    write_tiny_job,
)
from tests.helpers import packrun as checkout_packrun

pytestmark = pytest.mark.cluster("netns")

CLUSTER = REPO / "tests" / "cluster"
WORKER = str(REPO / "src" / "train.py")
STATE = Path(os.environ.get("PACKRUN_NETNS_DIR", "/tmp/packrun-netns"))
TOOLS = ("ip", "nsenter", "unshare", "getent", "munged", "mungekey", "slurmctld", "slurmd",
         "sbatch", "scontrol", "sinfo")
MASTER_PORT = 8118  # free in node1's namespace: nothing else listens there
TWO_NODES = ("--nodes=2", "--cards_per_node=1")  # one CPU worker per host: 2 cores in all


def _capability_problem() -> str | None:
    if os.geteuid() != 0:
        return "the netns cluster needs root (network namespaces, a bridge, bind mounts)"
    for tool in TOOLS:
        need_tool(tool, "for the two-host network-namespace cluster")
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return ("cannot create namespaces here (no CAP_SYS_ADMIN / CAP_NET_ADMIN?): "
                f"{probe.stderr.strip()}")
    return None


def read_env(path: Path) -> dict[str, str]:
    """netns.env's `export KEY=VALUE` lines (values shell-quoted)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0]
    return env


def hosts_digest() -> str:
    return hashlib.sha256(Path("/etc/hosts").read_bytes()).hexdigest()


class Cluster:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.nodes = env["NETNS_NODES"].split()
        self.netns = dict(zip(self.nodes, env["NETNS_NAMESPACES"].split()))
        self.ips = dict(zip(self.nodes, env["NETNS_IPS"].split()))

    def node_of_namespace(self) -> dict[int, str]:
        """{inode of a network namespace: the host it is}."""
        return {os.stat(f"/run/netns/{ns}").st_ino: node for node, ns in self.netns.items()}

    def subprocess_env(self, **extra) -> dict[str, str]:
        """This cluster's Slurm (CI also exports another cluster's SLURM_CONF)."""
        return dict(os.environ, SLURM_CONF=self.env["SLURM_CONF"],
                    PACKRUN_NETNS_DIR=self.env["PACKRUN_NETNS_DIR"], **extra)

    def on_node(self, node: str, command: str, out: Path, **env) -> subprocess.Popen:
        """`ssh NODE COMMAND` here: tests/cluster/on_node.sh; output to `out`."""
        with open(out, "w") as f:
            return subprocess.Popen(["bash", str(CLUSTER / "on_node.sh"), node, command],
                                    stdout=f, stderr=subprocess.STDOUT,
                                    env=self.subprocess_env(**env))

    def run_on(self, node: str, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(CLUSTER / "on_node.sh"), node, command],
                              capture_output=True, text=True, timeout=60,
                              env=self.subprocess_env())


def _up() -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER / "netns_up.sh")], capture_output=True, text=True,
                          timeout=180)


def _down() -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER / "netns_down.sh")], capture_output=True,
                          text=True, timeout=180)


@pytest.fixture(scope="module")
def cluster():
    problem = _capability_problem()
    if problem:
        unavailable(problem)
    before = hosts_digest()
    up = _up()
    if up.returncode != 0 and "Operation not permitted" in up.stderr:
        unavailable(f"netns_up.sh is not permitted here: {up.stderr.strip().splitlines()[-1]}")
    assert up.returncode == 0, f"netns_up.sh failed:\n{up.stdout}{up.stderr}"
    yield Cluster(read_env(STATE / "netns.env"))
    down = _down()
    assert down.returncode == 0, down.stderr
    assert hosts_digest() == before, "the machine's /etc/hosts changed"


@pytest.fixture(scope="module")
def job(tmp_path_factory, digits_2class):
    d = tmp_path_factory.mktemp("multinode")
    return write_tiny_job(d / "mn.toml", digits_2class, lr=0.02, num_parallel_workers=1)


# ---------------------------------------------------------------------------------------------
# Helpers: packrun, where ranks run, what is left
# ---------------------------------------------------------------------------------------------

def packrun(cluster: Cluster, *args, timeout=300) -> subprocess.CompletedProcess:
    """The shared packrun(), pointed at this cluster's Slurm."""
    return checkout_packrun(*args, env=cluster.subprocess_env(), timeout=timeout)


def render(cluster: Cluster, job: Path, *flags) -> Path:
    r = packrun(cluster, "render", job, *TWO_NODES, "--hosts=node1,node2", *flags)
    assert r.returncode == 0, r.stderr
    return Path(re.search(r"packrun: rendered (\S+)", r.stderr).group(1))


def workers(under: Path, cluster: Cluster) -> dict:
    """{rank or "scheduler": (pid, host)} of the live processes of the worker script whose run
    directory is under `under`; the host is the one whose network namespace the process is in."""
    hosts = cluster.node_of_namespace()
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []  # `python WORKER RUN_DIR`; msrun's own line names both too
        if len(cmd) != 3 or cmd[1] != WORKER or not cmd[2].startswith(str(under)):
            continue
        try:
            env = p.environ()
            inode = os.stat(f"/proc/{p.pid}/ns/net").st_ino
        except (psutil.Error, OSError):
            continue
        rank = ranks.rank_from_env(env)
        found["scheduler" if rank is None else rank] = (p.pid, hosts.get(inode, "the machine"))
    return found


class Placement:
    """Samples where the ranks of the runs under a directory run while a job is going:
    `hosts` = {rank or "scheduler": host}."""

    def __init__(self, under: Path, cluster: Cluster):
        self.under, self.cluster, self.hosts = under, cluster, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.2):
            for rank, (_, host) in workers(self.under, self.cluster).items():
                self.hosts[rank] = host

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def left_on_hosts(cluster: Cluster) -> list[str]:
    """Live processes on the cluster's hosts other than their slurmd."""
    found, hosts = [], cluster.node_of_namespace()
    for p in psutil.process_iter(["cmdline", "name"]):
        try:
            on_host = os.stat(f"/proc/{p.pid}/ns/net").st_ino in hosts
        except OSError:
            continue
        if on_host and p.info["name"] != "slurmd":
            found.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])}")
    return found


def assert_nothing_left(cluster: Cluster, run_dir: Path):
    """Nothing names the run directory and nothing but slurmd runs on the hosts (within 30 s)."""
    deadline = time.monotonic() + 30  # Slurm's step daemons take a moment to go
    while (left := processes_of(run_dir) + left_on_hosts(cluster)) and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left running: {left}"


def assert_trained_across_hosts(run_dir: Path, placement: Placement):
    assert placement.hosts == {"scheduler": "node1", 0: "node1", 1: "node2"}
    for name in ("worker_0.log", "worker_1.log", "worker_0.exit", "worker_1.exit"):
        assert (run_dir / "logs" / name).is_file(), f"no logs/{name}"
    assert (run_dir / "best.ckpt").is_file()         # rank 0, on node1
    d = digests(run_dir)
    assert d[0] == d[1], f"the hosts ended with different weights: {d}"


# ---------------------------------------------------------------------------------------------
# The cluster itself
# ---------------------------------------------------------------------------------------------

def test_two_hosts_on_a_private_bridge(cluster):
    for node in cluster.nodes:
        r = cluster.run_on(node, "hostname; getent hosts node1 node2; ip -4 -o addr show eth0; "
                                 "ip route get 192.0.2.1 2>&1; true")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == node
        assert re.split(r"\s+", lines[1]) == [cluster.ips["node1"], "node1"]
        assert re.split(r"\s+", lines[2]) == [cluster.ips["node2"], "node2"]
        assert f"inet {cluster.ips[node]}/24" in lines[3]
        assert "Network is unreachable" in lines[4]       # no route out of the bridge
    sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                           env=cluster.subprocess_env(), timeout=30)
    assert sorted(sinfo.stdout.splitlines()) == ["node1 idle", "node2 idle"], sinfo.stdout
    assert os.uname().nodename not in cluster.nodes     # the machine keeps its own name


# ---------------------------------------------------------------------------------------------
# Jobs across the two hosts
# ---------------------------------------------------------------------------------------------

def test_submit_runs_one_worker_on_each_node(cluster, job, tmp_path):
    with Placement(tmp_path, cluster) as placement:
        r = packrun(cluster, "submit", job, *TWO_NODES, "--wait", f"--out={tmp_path}")
    assert r.returncode == 0, shown(r.stdout + r.stderr)
    run_dir = run_dir_of(r.stdout)
    job_id = (run_dir / SLURM_JOB_ID).read_text().strip()
    assert f"packrun: job {job_id} COMPLETED, exit code 0" in r.stdout
    assert_trained_across_hosts(run_dir, placement)
    # the master, a host name (the allocation's first node), resolved on both hosts
    batch = (run_dir / f"slurm-{job_id}.out").read_text()
    assert re.search(r"on node\[1-2\], scheduler node1:\d+", batch), batch
    for node_rank in (0, 1):  # each host's msrun output, on the shared run directory
        out = (run_dir / "logs" / f"msrun-node{node_rank}.out").read_text()
        assert f"packrun: node {node_rank} of 2: msrun with 1 worker(s)" in out
    assert_nothing_left(cluster, run_dir)


def test_rendered_msrun_command_on_each_node(cluster, job, tmp_path):
    run_dir = render(cluster, job, f"--master_port={MASTER_PORT}")   # master: node1, a name
    with Placement(run_dir, cluster) as placement:
        procs = [cluster.on_node(node, f"bash {run_dir}/msrun.sh {rank}",
                                 tmp_path / f"{node}.out")
                 for rank, node in enumerate(cluster.nodes)]
        codes = [p.wait(timeout=300) for p in procs]
    outs = [(tmp_path / f"{node}.out").read_text() for node in cluster.nodes]
    assert codes == [0, 0], shown("\n".join(outs))
    assert f"packrun: node 0 of 2: msrun with 1 worker(s), scheduler node1:{MASTER_PORT}" in outs[0]
    assert_trained_across_hosts(run_dir, placement)
    assert (run_dir / "logs" / "scheduler.log").is_file()
    assert_nothing_left(cluster, run_dir)


def test_mpirun_reaches_the_other_host_through_its_rsh_agent(cluster, job, tmp_path):
    need_tool("mpirun", "for the mpirun launch across the hosts")
    run_dir = render(cluster, job, "--launcher=mpirun")
    assert (run_dir / "hostfile").read_text() == "node1 slots=1\nnode2 slots=1\n"
    with Placement(run_dir, cluster) as placement:
        proc = cluster.on_node("node1", f"bash {run_dir}/mpirun.sh", tmp_path / "mpirun.out",
                               OMPI_MCA_plm_rsh_agent=str(CLUSTER / "on_node.sh"))
        code = proc.wait(timeout=300)
    assert code == 0, shown((tmp_path / "mpirun.out").read_text())
    assert_trained_across_hosts(run_dir, placement)
    assert_nothing_left(cluster, run_dir)


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------

def _kill_worker_on_node2(cluster, under: Path) -> float:
    """Once the cluster has formed (rank 0 printed its plan), SIGKILL rank 1's process, which
    must be on node2; returns the time of the kill."""
    def formed():
        return any("steps/epoch" in p.read_text() for p in under.glob("**/logs/worker_0.log"))

    wait_for(formed, 180, "the workers to form their cluster")
    pid, host = wait_for(lambda: workers(under, cluster).get(1), 30, "rank 1's process")
    assert host == "node2"
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def test_killed_worker_on_node2_fails_the_submitted_job(cluster, job, tmp_path):
    with open(tmp_path / "submit.out", "w") as out:
        proc = subprocess.Popen(packrun_argv("submit", job, *TWO_NODES, "--wait", "--epochs=50",
                                             f"--out={tmp_path}",
                                             "--max_restarts=0"),  # (Slurm jobs requeue by default)
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env=packrun_env(cluster.subprocess_env()))
    try:
        killed = _kill_worker_on_node2(cluster, tmp_path)
        code = proc.wait(timeout=120)
        took = time.monotonic() - killed
    finally:
        proc.kill()
    text = (tmp_path / "submit.out").read_text()
    run_dir = run_dir_of(text)
    job_id = (run_dir / SLURM_JOB_ID).read_text().strip()
    assert took < 60, f"the job took {took:.0f} s to end after the kill"
    assert code != 0 and f"packrun: job {job_id} FAILED" in text, shown(text)
    assert re.search(r"srun: error: node2: task 1: Exited with exit code", text), shown(text)
    assert_nothing_left(cluster, run_dir)
    assert re.search(r"rank 1 was killed or never started \(no exit status\); log \S+/logs/"
                     r"worker_1\.log", text), shown(text)


def test_killed_worker_on_node2_ends_both_per_node_commands(cluster, job, tmp_path):
    # Without srun to stop them, node1's processes end when MindSpore's scheduler misses rank
    # 1's heartbeats for MS_NODE_TIMEOUT (default 30 s) and rank 0 then gives up reconnecting
    # (up to ~35 s more): 33-66 s measured. The job key env sets it (README, Multi-node).
    run_dir = render(cluster, job, f"--master_port={MASTER_PORT}", "--epochs=50",
                     '--env={"MS_NODE_TIMEOUT": "15"}')
    procs = [cluster.on_node(node, f"bash {run_dir}/msrun.sh {rank}", tmp_path / f"{node}.out")
             for rank, node in enumerate(cluster.nodes)]
    try:
        killed = _kill_worker_on_node2(cluster, run_dir)
        codes = [p.wait(timeout=120) for p in procs]
        took = time.monotonic() - killed
    finally:
        for p in procs:
            p.kill()
    node1, node2 = [(tmp_path / f"{node}.out").read_text() for node in cluster.nodes]
    assert took < 60, f"the hosts took {took:.0f} s to end after the kill"
    assert 0 not in codes, f"exit statuses {codes}"
    # node2's msrun names its node rank, the rank it started and how that rank ended; node1's
    # scheduler names the rank that stopped answering
    assert "packrun: node 1 of 2" in node2 and "rank id:1," in node2, shown(node2)
    assert re.search(r"Worker process \d+ exit with exception. Error code: -9", node2), node2
    # (in node1's output, or only in the scheduler's log in the run directory)
    scheduler = (Path(run_dir) / "logs" / "scheduler.log").read_text(errors="replace") \
        if (Path(run_dir) / "logs" / "scheduler.log").exists() else ""
    assert "worker 1 is the first one timed out" in node1 + scheduler, shown(node1)
    assert_nothing_left(cluster, run_dir)


@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_unresolvable_master_is_an_error_before_any_worker_starts(cluster, job, tmp_path,
                                                                  launcher):
    if launcher == "mpirun":
        need_tool("mpirun", "for the mpirun launch across the hosts")
    run_dir = render(cluster, job, f"--launcher={launcher}", "--master_addr=nosuchhost.invalid",
                     f"--master_port={MASTER_PORT}")
    script = f"bash {run_dir}/{launcher}.sh" + (" {rank}" if launcher == "msrun" else "")
    hosts = cluster.nodes if launcher == "msrun" else ["node1"]  # mpirun.sh runs on the master
    for rank, node in enumerate(hosts):
        t0 = time.monotonic()
        r = cluster.run_on(node, script.format(rank=rank))
        assert r.returncode == 2, r.stdout + r.stderr
        assert time.monotonic() - t0 < 10
        assert "the master address 'nosuchhost.invalid' does not resolve" in r.stderr
        assert node in r.stderr, r.stderr                     # names the host
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == []   # nothing started
    assert_nothing_left(cluster, run_dir)


@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_a_loopback_master_is_an_error_before_any_worker_starts(cluster, job, launcher):
    """The hosts' private /etc/hosts maps localhost to 127.0.0.1, as a Debian host maps its own
    name to 127.0.1.1: a scheduler there is unreachable from the other host."""
    if launcher == "mpirun":
        need_tool("mpirun", "for the mpirun launch across the hosts")
    run_dir = render(cluster, job, f"--launcher={launcher}", "--master_addr=localhost",
                     f"--master_port={MASTER_PORT}")
    script = f"bash {run_dir}/{launcher}.sh" + (" {rank}" if launcher == "msrun" else "")
    hosts = cluster.nodes if launcher == "msrun" else ["node1"]
    for rank, node in enumerate(hosts):
        r = cluster.run_on(node, script.format(rank=rank))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "master_addr 'localhost' resolves to 127.0.0.1, a loopback address" in r.stderr
        assert node in r.stderr, r.stderr
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == []   # nothing started
    assert_nothing_left(cluster, run_dir)


# ---------------------------------------------------------------------------------------------
# Up and down
# ---------------------------------------------------------------------------------------------

def test_down_leaves_nothing_and_up_is_idempotent(cluster):
    before = hosts_digest()
    again = _up()
    assert again.returncode == 0 and "already up" in again.stderr, again.stderr
    for _ in range(2):  # down is idempotent too
        down = _down()
        assert down.returncode == 0, down.stderr
        assert not STATE.exists()
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert not re.search(r"\d+: (prnbr0|prn-node\d)[@:]", links), links
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert "packrun-node" not in netns
        mounts = Path("/proc/mounts").read_text()
        assert "packrun-node" not in mounts and str(STATE) not in mounts
        assert not [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                    if str(STATE) in " ".join(p.info["cmdline"] or [])]
    assert hosts_digest() == before
    up = _up()  # and back, for whatever runs after
    assert up.returncode == 0, up.stderr
