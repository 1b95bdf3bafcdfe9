"""`packrun run JOB --nodes=N --hosts=a,b,...`: one command starts, watches, stops and restarts
every node of a job over ssh, without a scheduler.

Run on the first host, node 0 starts here and node k on host k through the system's ssh
(launcher/multinode/ssh.py); run from any other machine that reaches every host (a login node),
every node starts over ssh. Each node runs its node program, `python -m launcher.node host-run
RUN_DIR K ATTEMPT` (launcher/node/host.py), which starts the run directory's msrun.sh or
rank_table.sh for node K, reports its state and ends with its session: packrun holds each
session's stdin open, so packrun ending in any way (even kill -9) ends every node.

Before anything starts, every node is checked over ssh (launcher/multinode/preflight.py). The
console shows rank 0's progress and one line per node state change. The first node that fails
stops every other node (its session closed; after the grace period, the pids it recorded,
through a fresh ssh connection: `python -m launcher.node stop-node`); Ctrl-C and SIGTERM stop
every node. `max_restarts` restarts the whole launch from last.ckpt (launcher/supervise/
restarts.py); `--resume` starts a multi-node run directory again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from launcher.core import hostlist
from launcher.core.errors import UserError
from launcher.core.log import console as log_console
from launcher.core.log import get_logger
from launcher.core.logtail import LogFollower, tail
from launcher.core.paths import REPO
from launcher.core.rundir import attempts, nodes
from launcher.core.rundir.lock import acquire
from launcher.core.rundir.names import (
    EXIT_REQUEUE,
    GRACE_S,
    NODES_PLAN,
    PREEMPT_FLAG,
    node_out,
    node_state,
    worker_log,
)
from launcher.core.spec import JobSpec, load_job
from launcher.multinode import policy, preflight, ssh
from launcher.preflight.checks import check_before_launch
from launcher.preflight.resume import resume_target
from launcher.render.artifacts import CLUSTER_TIMEOUT_TOGETHER, write_run_dir
from launcher.supervise import processes, restarts

log = get_logger(__name__)

POLL_S = 0.1
BACKSTOP_TIMEOUT_S = ssh.CONNECT_TIMEOUT_S + GRACE_S + 10
LAUNCHERS = ("msrun", "rank_table")


class Launch:
    """The nodes of one run directory and how to reach them."""

    def __init__(self, run_dir: Path, spec: JobSpec, plan: dict, python: str = sys.executable,
                 repo: str = str(REPO), grace_s: float = GRACE_S):
        self.run_dir, self.spec, self.python, self.repo = run_dir, spec, python, repo
        self.hosts: list[str] = list(plan["hosts"])
        self.local0 = bool(plan.get("node0_local"))
        self.options = ssh.SshOptions(tuple(plan.get("ssh") or ()))
        self.grace_s = grace_s
        self.console = log_console()

    def argv(self, k: int, args: list[str]) -> list[str]:
        return preflight.node_argv(k, self.hosts, self.local0, self.options, self.python,
                                   self.repo, args)

    def where(self, k: int) -> str:
        return f"node {k} ({self.hosts[k]})"

    # -- one attempt -----------------------------------------------------------------------
    def start(self, k: int, attempt: int) -> subprocess.Popen:
        argv = self.argv(k, ["host-run", str(self.run_dir), str(k), str(attempt)])
        env = dict(os.environ, PYTHONPATH=self.repo) if k == 0 and self.local0 else None
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd=self.repo, env=env,
                                start_new_session=True)
        threading.Thread(target=self._relay, args=(k, proc), daemon=True).start()
        return proc

    def _relay(self, k: int, proc: subprocess.Popen) -> None:
        """A node's session output: its state lines as they are, anything else (ssh's own
        messages, a traceback) with a [nodeK] prefix, to the console and logs/node<K>.out."""
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if not line.startswith("packrun: node "):
                line = f"[node{k}] {line}"
                try:
                    with open(self.run_dir / node_out(k), "a") as f:
                        f.write(line + "\n")
                except OSError:
                    pass
            self.console.write(line + "\n")
            self.console.flush()

    def once(self, attempt: int) -> attempts.Result:
        (self.run_dir / PREEMPT_FLAG).unlink(missing_ok=True)
        for k in range(len(self.hosts)):  # the last attempt's node states
            (self.run_dir / node_state(k)).unlink(missing_ok=True)
        log.info(f"packrun: following {self.run_dir / worker_log(0)} (rank 0)"
                 + (f", attempt {attempt}" if attempt > 1 else ""))
        follower = LogFollower(self.run_dir / worker_log(0), self.console)
        procs: dict[int, subprocess.Popen] = {}
        ends: list[policy.Ended] = []
        with processes.forward_signals([], self.grace_s) as got:
            try:
                for k in range(len(self.hosts)):
                    procs[k] = self.start(k, attempt)
                while True:
                    follower.poll()
                    for k, proc in procs.items():
                        if any(e.node == k for e in ends):
                            continue
                        rc = proc.poll()
                        if rc is not None:
                            ends.append(policy.Ended(k, self.hosts[k], rc,
                                                     nodes.read_node(self.run_dir, k)))
                    if got["signal"] is not None:
                        name = signal.Signals(got["signal"]).name
                        log.warning(f"packrun: {name}: stopping every node")
                        self.stop(procs, ends)
                        return attempts.Result(128 + got["signal"], reason=f"stopped by {name}",
                                               user_stop=True)
                    if policy.culprit(ends) is not None or len(ends) == len(procs):
                        break
                    time.sleep(POLL_S)
                bad = policy.culprit(ends)
                if bad is not None:
                    log.error(f"packrun: {self.where(bad.node)} failed: stopping the other nodes")
                self.stop(procs, ends)
            finally:
                for proc in procs.values():  # packrun itself failing: leave nothing behind
                    if proc.poll() is None:
                        processes.stop(proc, 1.0)
        follower.poll(final=True)
        result = policy.result(ends, len(self.hosts))
        if result.code not in (0, EXIT_REQUEUE):
            log.error(f"packrun: run failed: {result.reason}")
            if result.rank is not None:
                log_file = self.run_dir / worker_log(result.rank)
            else:  # no rank failed: the node's launch script or session did
                log_file = self.run_dir / node_out(result.node or 0)
            log.error(f"packrun: last lines of {log_file}:\n{tail(log_file)}")
        return result

    # -- stopping --------------------------------------------------------------------------
    def stop(self, procs: dict[int, subprocess.Popen], ends: list[policy.Ended]) -> None:
        """Stop every node still running: close its session's input (the node program stops
        its script and ranks), then, for a node not gone after the grace period or whose
        session ended without its last word, the backstop: `stop-node` over a fresh ssh
        connection (here for node 0 on this machine)."""
        running = {k: p for k, p in procs.items() if not any(e.node == k for e in ends)}
        for proc in running.values():
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + self.grace_s + 5
        while time.monotonic() < deadline and any(p.poll() is None for p in running.values()):
            time.sleep(POLL_S)
        for k, proc in running.items():
            if proc.poll() is None:
                log.warning(f"packrun: {self.where(k)} did not stop in time: stopping the "
                            "processes it recorded")
                self.backstop(k)
                processes.stop(proc, 2.0)
            ends.append(policy.Ended(k, self.hosts[k], processes.exit_code(proc.returncode),
                                     nodes.read_node(self.run_dir, k)))
        for e in ends:  # sessions lost: their processes may still run on their hosts
            if policy.lost(e):
                self.backstop(e.node)

    def backstop(self, k: int) -> None:
        argv = self.argv(k, ["stop-node", str(self.run_dir), str(k)])
        env = dict(os.environ, PYTHONPATH=self.repo) if k == 0 and self.local0 else None
        try:
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=BACKSTOP_TIMEOUT_S, cwd=self.repo, env=env)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning(f"packrun: could not reach {self.where(k)} to stop its processes: {e}")

    # -- the run ---------------------------------------------------------------------------
    def execute(self) -> int:
        world = self.spec.nodes * self.spec.cards_per_node
        allowed = attempts.max_restarts(self.spec, "run")
        where = "here and over ssh" if self.local0 else "over ssh"
        log.info(f"packrun: {self.spec.launcher} on {len(self.hosts)} nodes "
                 f"({', '.join(self.hosts)}) x {self.spec.cards_per_node} worker(s), started "
                 f"{where}; run directory {self.run_dir}"
                 + (f"; up to {allowed} restart(s)" if allowed else ""))
        code = restarts.with_restarts(self.run_dir, "run", world, allowed, self.once)
        return restarts.say_run_directory(self.run_dir, code)


def _hosts(spec: JobSpec) -> list[str]:
    if not spec.hosts:
        raise UserError(f"nodes = {spec.nodes}: give the hosts to start them on, in node order: "
                        "--hosts=a,b (or node[1-2]); or submit to Slurm: packrun submit")
    hosts = hostlist.expand(spec.hosts)
    if len(hosts) != spec.nodes:
        raise UserError(f"key 'hosts' names {len(hosts)} host(s) but nodes = {spec.nodes}; list "
                        "one host per node")
    dup = next((h for i, h in enumerate(hosts) if h in hosts[:i]), None)
    if dup:
        raise UserError(f"key 'hosts': {dup} is listed twice; list each node once")
    return hosts


def _check_launcher(spec: JobSpec) -> None:
    if spec.launcher not in LAUNCHERS:
        raise UserError(f"launcher {spec.launcher!r} on {spec.nodes} nodes: mpirun starts the "
                        "other nodes with its own ssh; render it (packrun render JOB "
                        "--launcher=mpirun --nodes=N --hosts=...) and run mpirun.sh on node 0, or "
                        "use --launcher=msrun or rank_table")


def new_run(spec: JobSpec, python: str = sys.executable, repo: str = str(REPO)) -> Launch:
    """Check, probe every node, render: a Launch ready to execute (nothing written on error)."""
    _check_launcher(spec)
    options = ssh.parse_options(spec.ssh)
    hosts = _hosts(spec)
    local0 = preflight.is_local(hosts[0], options)
    master = spec.master_addr or hosts[0]
    out = Path(spec.output_dir).resolve()
    answers = preflight.ask(hosts, local0, options, python, repo, out, master,
                            spec.master_port)
    addrs, master_addr, port = preflight.judge(answers, out, master, bool(spec.master_addr),
                                               spec.master_port)
    rendered = spec.replace(master_addr=master_addr, master_port=port,
                            cluster_timeout=spec.cluster_timeout or CLUSTER_TIMEOUT_TOGETHER,
                            hosts=",".join(addrs) if spec.launcher == "rank_table" else spec.hosts)
    # the data, here (it must be on storage every node shares); the cards where node 0 runs
    check_before_launch(rendered, here=local0, port_checked=True)
    run_dir, _ = write_run_dir(rendered, python=python, repo=repo)
    nodes.write_plan(run_dir, hosts, addrs, list(options.words), local0)
    plan = nodes.read_plan(run_dir) or {}
    return Launch(run_dir, rendered, plan, python, repo)


def resume_run(run_dir: Path, spec: JobSpec, plan: dict, python: str = sys.executable,
               repo: str = str(REPO)) -> Launch:
    """A multi-node run directory, checked again over ssh before it starts again."""
    hosts = list(plan["hosts"])
    options = ssh.SshOptions(tuple(plan.get("ssh") or ()))
    local0 = preflight.is_local(hosts[0], options)
    answers = preflight.ask(hosts, local0, options, python, repo, run_dir, spec.master_addr,
                            spec.master_port)
    preflight.judge(answers, run_dir, spec.master_addr, True, spec.master_port)
    return Launch(run_dir, spec, plan | {"node0_local": local0}, python, repo)


def is_multinode(job: str | None, overrides: dict, resume: str | None = None) -> bool:
    """Whether `packrun run` with these arguments is a launch over ssh: nodes > 1, or --resume
    of a run directory such a launch wrote."""
    if resume:
        return (Path(resume).expanduser() / NODES_PLAN).is_file()
    if not job:
        return False
    return load_job(job, overrides).nodes > 1


def run_command(job: str | None, overrides: dict, workers: int | None = None,
                resume: str | None = None) -> int:
    """`packrun run` for nodes > 1 (and `--resume` of such a run directory)."""
    if resume:
        if job or overrides or workers:
            raise UserError("--resume RUN_DIR runs that directory's job as it was rendered; give "
                            "no job file or other flags with it")
        run_dir, spec = resume_target(resume)
        plan = nodes.read_plan(run_dir)
        if not plan:
            raise UserError(f"{run_dir} is not a multi-node run of packrun run (no nodes plan)")
        lock = acquire(run_dir, "packrun run --resume")
        with lock:
            return resume_run(run_dir, spec, plan).execute()
    if not job:
        raise UserError("give a job file: packrun run JOB --nodes=N --hosts=a,b,...")
    if workers is not None:
        overrides = {**overrides, "cards_per_node": workers}
    launch = new_run(load_job(job, overrides))
    with acquire(launch.run_dir, "packrun run"):
        return launch.execute()
