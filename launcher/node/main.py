"""`python -m launcher.node VERB ARGS`: the one entry point of the node side.

Rendered launch scripts (templates/*.j2) call packrun only through this module, by verb, so that
moving a module never breaks a run directory rendered before the move (a queued or requeued
Slurm job, a `--resume`, a site template copied with `packrun templates`). Every verb prints its
result on stdout and exits 0; bad input is one `packrun: error: ...` line and exit 2.

    cores N [--per | --msrun | --with-msrun]
                                       this node's cores split over N local ranks
                                       (launcher/core/cores.py)
    hostnames HOSTLIST                 a Slurm hostlist expression, one host per line
    server-index RANK_TABLE            this machine's place in the rank table
    attempt begin RUN_DIR ATTEMPT      a Slurm attempt begins
    attempt end RUN_DIR ATTEMPT RC     it ended: prints completed, restart or stop
    lock-holder RUN_DIR                who holds the run directory's lock
    batch RUN_DIR -- SRUN ...          one run of job.sbatch: lock, SIGUSR1, attempt, the srun
                                       step, requeue (launcher/node/batch.py); its exit status
    supervise-ranks RUN_DIR SERVER_INDEX --rank R CMD ... [--rank R CMD ...]
                                       start this server's ranks (rank_table.sh), each CMD in
                                       ranks/R/ with its log, and supervise them
                                       (launcher/supervise/supervisor.py); their exit status
    check RUN_DIR NODE                 Ascend: this node's cards (printed when Slurm's gres/npu
                                       chose them) and the node checks before any rank starts
                                       (launcher/preflight/node.py); exit 2 when one fails
    array-task SWEEP_DIR POINT JOB_ID ARRAY_JOB_ID
                                       a sweep's array task starts point POINT: the job ids,
                                       written atomically (job_array.sbatch)
    probe TOKEN_FILE TOKEN MASTER_ADDR PORT SELF_NAME
                                       what this node says before a launch over ssh, one JSON
                                       line (launcher/multinode/probe.py)
    host-run RUN_DIR NODE ATTEMPT      this node's share of a launch over ssh: its launch
                                       script, watched, ended with its session
                                       (launcher/node/host.py)
    stop-node RUN_DIR NODE             stop what node NODE's program recorded, on this host

`batch` and `supervise-ranks` are exec'd by their scripts: from then on they are the script's
process. Each verb imports what it needs when it runs: a launch script calls `cores` and
`server-index` on every node of every launch, and the attempt protocol's imports (spec, the
environment record, importlib.metadata) would cost each of those calls most of its time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from launcher.core import cores, hostlist
from launcher.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from launcher.core.rundir.names import DEVICE_ENV, EXIT_REQUEUE, JOB_JSON, SLURM_JOB_ID, node_lock


def _cores(argv: Sequence[str]) -> int:
    args = list(argv)
    mode = next((a for a in args if a.startswith("--")), "")
    rest = [a for a in args if not a.startswith("--")]
    if len(rest) != 1 or not rest[0].isdigit() or \
            mode not in ("", "--per", "--msrun", "--with-msrun"):
        return _usage("cores LOCAL_RANKS [--per | --msrun | --with-msrun]")
    ranks = int(rest[0])
    try:
        split = cores.split_cores(cores.available_cores(), cores.numa_nodes(), ranks)
    except UserError as e:
        print(f"packrun: error: core binding: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    if mode == "--per":
        print(len(split[0]))
        return 0
    if mode != "--msrun":
        print(" ".join(cores.format_cpulist(c) for c in split))
    if mode != "" and cores.msrun_can_bind(split):
        devices = cores.physical_devices(ranks, os.environ,
                                         os.environ.get(DEVICE_ENV, ""))
        import json
        print(json.dumps(cores.msrun_bind(split, devices), separators=(",", ":")))
    return 0


def _hostnames(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        return _usage("hostnames HOSTLIST")
    try:
        print("\n".join(hostlist.expand(argv[0])))
    except UserError as e:
        print(f"packrun: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def _server_index(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        return _usage("server-index RANK_TABLE")
    from launcher.render.ranktable import server_index_main
    return server_index_main(argv)


def _attempt(argv: Sequence[str]) -> int:
    if not ((len(argv) == 3 and argv[0] == "begin") or (len(argv) == 4 and argv[0] == "end")) \
            or not all(a.isdigit() for a in argv[2:]):
        return _usage("attempt begin RUN_DIR ATTEMPT | attempt end RUN_DIR ATTEMPT RC")
    from launcher.core.rundir import attempts
    return attempts.batch_main(list(argv))


def _lock_holder(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        return _usage("lock-holder RUN_DIR")
    from launcher.core.rundir.lock import holder
    print(holder(Path(argv[0]) / node_lock(0)))
    return 0


def _batch(argv: Sequence[str]) -> int:
    from launcher.node.batch import batch_main
    return batch_main(argv)


def _supervise_ranks(argv: Sequence[str]) -> int:
    usage = "supervise-ranks RUN_DIR SERVER_INDEX --rank R CMD ... [--rank R CMD ...]"
    if len(argv) < 5 or not argv[1].isdigit() or argv[2] != "--rank":
        return _usage(usage)
    run_dir, server = Path(argv[0]), argv[1]
    commands: list[tuple[int, list[str]]] = []
    for arg in argv[2:]:
        if arg == "--rank":
            commands.append((-1, []))
        elif commands[-1][0] < 0:
            if not arg.isdigit():
                return _usage(usage)
            commands[-1] = (int(arg), [])
        else:
            commands[-1][1].append(arg)
    if any(rank < 0 or not cmd for rank, cmd in commands):
        return _usage(usage)
    from launcher.supervise.supervisor import supervise_ranks
    outcome = supervise_ranks(run_dir, commands)
    if outcome.code == EXIT_REQUEUE:
        print(f"packrun: the ranks of server {server} stopped on request (exit {outcome.code})",
              flush=True)
    elif outcome.code == 0:
        print(f"packrun: all {len(commands)} rank(s) of server {server} finished", flush=True)
    return outcome.code


def _check(argv: Sequence[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        return _usage("check RUN_DIR NODE")
    from launcher.preflight.node import node_check_main
    return node_check_main(argv)


def _array_task(argv: Sequence[str]) -> int:
    if len(argv) != 4 or not argv[2].isdigit() or not argv[3].isdigit():
        return _usage("array-task SWEEP_DIR POINT JOB_ID ARRAY_JOB_ID")
    from launcher.core.rundir.atomic import write_atomic
    sweep_dir, point, job_id, array_id = Path(argv[0]), Path(argv[1]), argv[2], argv[3]
    if not (point / SLURM_JOB_ID).exists():
        # the point's start time (packrun ls): when its first task starts, not at submission
        (point / JOB_JSON).touch()
    # the job ids, for packrun status / ls / cancel of the point and of the sweep
    write_atomic(point / SLURM_JOB_ID, job_id + "\n")
    write_atomic(sweep_dir / SLURM_JOB_ID, array_id + "\n")
    return 0


def _probe(argv: Sequence[str]) -> int:
    from launcher.multinode.probe import probe_main
    return probe_main(argv)


def _host_run(argv: Sequence[str]) -> int:
    if len(argv) != 3 or not argv[1].isdigit() or not argv[2].isdigit():
        return _usage("host-run RUN_DIR NODE ATTEMPT")
    from launcher.node.host import host_run
    return host_run(Path(argv[0]), int(argv[1]), int(argv[2]))


def _stop_node(argv: Sequence[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        return _usage("stop-node RUN_DIR NODE")
    from launcher.node.host import stop_node
    return stop_node(Path(argv[0]), int(argv[1]))


VERBS: dict[str, Callable[[Sequence[str]], int]] = {
    "cores": _cores,
    "hostnames": _hostnames,
    "server-index": _server_index,
    "attempt": _attempt,
    "lock-holder": _lock_holder,
    "batch": _batch,
    "supervise-ranks": _supervise_ranks,
    "array-task": _array_task,
    "check": _check,
    "probe": _probe,
    "host-run": _host_run,
    "stop-node": _stop_node,
}


def _usage(what: str) -> int:
    print(f"usage: python -m launcher.node {what}", file=sys.stderr)
    return EXIT_USER_ERROR


def legacy(module: str) -> None:
    """`python -m launcher.MODULE ARGS`, as run directories rendered by packrun before the node
    entry point (job.json schema 1) call it: the same verb, so those runs keep working."""
    verb = {"attempts": "attempt", "cores": "cores", "nodelist": "hostnames",
            "ranktable": None}[module]
    args = sys.argv[1:] if verb is None else [verb, *sys.argv[1:]]
    sys.exit(main(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in VERBS:
        return _usage("{" + " | ".join(VERBS) + "} ARGS")
    try:
        return VERBS[args[0]](args[1:])
    except KeyboardInterrupt:  # (batch and supervise-ranks stop their children themselves)
        print(f"packrun: {args[0]}: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
