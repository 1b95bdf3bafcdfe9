"""`packrun status / cancel` of a submitted run, and Slurm's commands for `packrun submit`
(launcher/slurm/submit.py) and the sweep's job array: a run directory's job.sbatch through them.

submit renders the job (launcher/render/artifacts.py, `slurm=True`) into a new run directory, hands
job.sbatch to `sbatch` and records the job id in RUN_DIR/slurm_job_id; everything else finds the
job from there. `--wait` follows the job with `scontrol show job` (faster than `sbatch --wait`,
whose polling slows to tens of seconds), streams rank 0's log as it grows (the run directory is on
a file system every node shares) and returns the job's exit status. A requeued job (preemption,
the time-limit warning, a node failure) is followed through its restarts until it really ends.

Every Slurm command goes through `call`: a missing tool, a timeout or a failure becomes one
UserError naming the command, the line of its stderr that says why, and the likely fix.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from launcher.core.errors import Unavailable, UserError
from launcher.core.log import STDOUT, get_logger
from launcher.core.log import console as log_console
from launcher.core.logtail import LogFollower, tail_lines
from launcher.core.rank_env import worker_env
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.attempts import max_restarts
from launcher.core.rundir.failure import read_failure, summary
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.metrics import best_row, read_metrics
from launcher.core.rundir.names import (
    CONSOLE_TTY_ENV,
    EXIT_REQUEUE,
    JOB_SBATCH,
    LAST_CKPT,
    LOGS,
    SLURM_JOB_ID,
    slurm_output,
    worker_exit,
    worker_log,
)
from launcher.core.rundir.state import Phase, read_run_state

log = get_logger(__name__)

POLL_S = 0.5
OUTAGE_S = 60.0  # how long --wait rides out a slurmctld that does not answer
COMMAND_TIMEOUT_S = 60
PAUSED = ("SUSPENDED", "STOPPED")  # stopped by Slurm (scontrol suspend), resumed by Slurm
# Slurm's job states (squeue %T, scontrol JobState, sacct State), as packrun's phases: the one
# map, used by `packrun ls` (a queued job's phase) and `packrun status`.
SLURM_PHASES: dict[str, Phase] = {
    **dict.fromkeys(("RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING",
                     "RESIZING"), Phase.RUNNING),
    "PENDING": Phase.PENDING,
    **dict.fromkeys(("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"), Phase.REQUEUED),
    **dict.fromkeys(PAUSED, Phase.STOPPED),
    "COMPLETED": Phase.COMPLETED,
    **dict.fromkeys(("FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                     "DEADLINE"), Phase.FAILED),
    **dict.fromkeys(("CANCELLED", "PREEMPTED"), Phase.STOPPED),
}
# States after which a job never runs again (a requeued job passes through REQUEUED / PENDING).
ENDED = frozenset(s for s, p in SLURM_PHASES.items() if p.is_terminal and s not in PAUSED)
HELD = {"REQUEUE_HOLD", "SPECIAL_EXIT"}  # requeued, but held until `scontrol release`


def queued_phase(state: str | None) -> Phase | None:
    """The phase of a job Slurm still holds (queued, running, requeued, suspended); None for
    one that ended or that it does not know: the run directory's own files say how it ended."""
    if state is None or state in ENDED:
        return None
    return SLURM_PHASES.get(state)
CLUSTER_HINT = "is SLURM_CONF set and slurmctld running? (check with `scontrol ping`)"
# What Slurm's commands say when they cannot reach slurmctld or find its configuration.
UNREACHABLE = re.compile(r"contact slurm controller|configuration (?:source|file)|"
                         r"Connection refused|Unable to (?:establish|connect)|fetch_config|"
                         r"Zero Bytes were transmitted", re.I)
PYTHON_FAILURE = re.compile(r"^(Traceback \(most recent call last\)|packrun: error:)", re.M)


class SlurmUnreachable(Unavailable):
    """slurmctld did not answer: an outage, worth retrying (exit 69, launcher/core/errors.py),
    unlike the UserErrors of a command that answered with a refusal."""


# ---------------------------------------------------------------------------------------------
# Slurm's commands
# ---------------------------------------------------------------------------------------------

def call(cmd: list[str], cwd: Path | None = None,
         env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a Slurm command; a missing tool is a UserError, no answer a SlurmUnreachable, its
    status is neither."""
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # Slurm's commands would retry it for a minute
        raise UserError(f"SLURM_CONF is {conf}, which is not a file: point it at the cluster's "
                        "slurm.conf, or unset it to use the default")
    log.debug(f"running {shlex.join(cmd)}")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env,
                              timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} not found (needed for `{shlex.join(cmd)}`): run packrun where "
                        "the Slurm client commands are installed, e.g. a login node (Debian: "
                        "apt-get install slurm-client)") from None
    except subprocess.TimeoutExpired:
        raise SlurmUnreachable(f"`{shlex.join(cmd)}` gave no answer in {COMMAND_TIMEOUT_S} s; "
                        f"{CLUSTER_HINT}") from None


def _first_line(res: subprocess.CompletedProcess) -> str:
    """The line of a failed command's output that says why: its fatal error, else its first."""
    lines = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()
    return next((line for line in lines if "fatal:" in line), lines[0])


def failed(cmd: list[str], res: subprocess.CompletedProcess) -> UserError | SlurmUnreachable:
    """The error for a Slurm command that failed: SlurmUnreachable when slurmctld did not answer."""
    text = f"{cmd[0]} failed (exit {res.returncode}) running `{shlex.join(cmd)}`: " \
           f"{_first_line(res)}"
    if UNREACHABLE.search(res.stderr + res.stdout):
        return SlurmUnreachable(f"{text}; {CLUSTER_HINT}")
    return UserError(text)


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> str:
    """Run a Slurm command and return its stdout; a failure is a UserError naming it."""
    res = call(cmd, cwd, env)
    if res.returncode != 0:
        raise failed(cmd, res)
    return res.stdout


def sbatch(script: Path, cwd: Path) -> str:
    """`sbatch SCRIPT` from `cwd`, with the environment `packrun run` gives its workers (sbatch
    passes it on), progress lines meant for a log file; the job id. The batch output is
    appended to, so a requeued job keeps the output of its earlier runs."""
    out = run(["sbatch", "--parsable", "--open-mode=append", str(script)], cwd=cwd, env=job_env())
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise UserError(f"sbatch printed {out.strip()!r} instead of a job id")
    return job_id


def scancel(job_id: str) -> None:
    """`scancel JOB_ID` (a job, or every task of a job array)."""
    run(["scancel", job_id])


def requeue(job_id: str) -> None:
    """`scontrol requeue JOB_ID`: the batch protocol's restart (launcher/node/batch.py); a
    failure is a UserError naming scontrol's reason."""
    run(["scontrol", "requeue", job_id])


def show_job(job_id: str) -> list[str] | None:
    """`scontrol -o show job JOB_ID`, one line per job (a job array's id: one per task); None
    when slurmctld does not know the id (never did, or forgot it after MinJobAge)."""
    cmd = ["scontrol", "-o", "show", "job", job_id]
    res = call(cmd)
    if res.returncode != 0:
        if "Invalid job id" in res.stderr:
            return None
        raise failed(cmd, res)
    return res.stdout.splitlines()


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str        # COMPLETED, RUNNING, PENDING, ... (Slurm's JOB_STATE, base state only)
    exit_code: int    # the batch script's exit status
    signal: int       # the signal that ended it, or 0
    restarts: int     # requeues so far
    elapsed: str      # run time, [D-]HH:MM:SS
    nodes: str        # the allocated hosts (hostlist syntax), "" while pending
    reason: str       # why it is pending, "" when it is not

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def status(self) -> int:
        """The exit status `submit --wait` returns: 0 only for COMPLETED."""
        if self.state == "COMPLETED":
            return 0
        return self.exit_code or (128 + self.signal if self.signal else 1)


def _exit_code(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+):(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _from_scontrol(job_id: str) -> JobInfo | None:
    lines = show_job(job_id)
    if lines is None:
        return None
    # a job array's id lists every task; the one whose own JobId it is is this job
    own = re.compile(rf"(?:^|\s)JobId={job_id}(?:\s|$)")
    line = next((ln for ln in lines if own.search(ln)), lines[0])
    fields = dict(re.findall(r"(?:^|\s)([A-Za-z]+)=(\S*)", line))
    code, sig = _exit_code(fields.get("ExitCode", ""))
    reason = fields.get("Reason", "None")
    nodes = fields.get("NodeList", "(null)")
    return JobInfo(job_id=job_id, state=fields.get("JobState", "UNKNOWN"), exit_code=code,
                   signal=sig, restarts=int(fields.get("Restarts", "0") or 0),
                   elapsed=fields.get("RunTime", ""), nodes="" if nodes == "(null)" else nodes,
                   reason="" if reason == "None" else reason)


def _from_sacct(job_id: str) -> JobInfo | None:
    try:
        res = call(["sacct", "-j", job_id, "-X", "-n", "-P", "-o",
                    "State,ExitCode,Elapsed,NodeList"])
    except (UserError, SlurmUnreachable):  # no sacct here: say what scontrol said instead
        return None
    rows = [r.split("|") for r in res.stdout.splitlines() if r.strip()]
    if res.returncode != 0 or not rows:
        return None
    state, exit_code, elapsed, nodes = rows[-1][:4]
    code, sig = _exit_code(exit_code)
    return JobInfo(job_id=job_id, state=state.split()[0], exit_code=code, signal=sig,
                   restarts=0, elapsed=elapsed, nodes=nodes, reason="")


FORGOTTEN = ("slurmctld forgets finished jobs after MinJobAge and sacct has no record of it "
             "(no accounting on this cluster?)")


def job_info(job_id: str) -> JobInfo:
    """The job's state from slurmctld, or from accounting (sacct) once slurmctld forgot it."""
    info = _from_scontrol(job_id) or _from_sacct(job_id)
    if info is None:
        raise UserError(f"Slurm does not know job {job_id}: {FORGOTTEN}")
    return info


def job_id_of(run_dir: str | Path) -> str:
    if not Path(run_dir).is_dir():
        raise UserError(f"run directory {run_dir} not found; pass the one `packrun submit` "
                        "printed")
    path = Path(run_dir) / SLURM_JOB_ID
    try:
        job_id = path.read_text().strip()
    except FileNotFoundError:
        raise UserError(f"{path} not found: {run_dir} was not submitted with `packrun submit` "
                        "(pass the run directory that `packrun submit` printed)") from None
    if not job_id.isdigit():
        raise UserError(f"{path} holds {job_id!r}, not a Slurm job id")
    return job_id


def submit(run_dir: Path) -> str:
    """sbatch RUN_DIR/job.sbatch; records and returns the job id. The batch output is appended
    to, so a requeued job keeps the output of its earlier runs. The job gets the environment
    `packrun run` gives its workers (sbatch passes it on), its progress lines for a log file."""
    job_id = sbatch(run_dir / JOB_SBATCH, cwd=run_dir)
    write_atomic(run_dir / SLURM_JOB_ID, job_id + "\n")
    return job_id


def job_env() -> dict[str, str]:
    """The environment a submitted job gets (sbatch passes it on): the one `packrun run` gives
    its workers, with progress lines for a log file."""
    return worker_env() | {CONSOLE_TTY_ENV: "0"}


def cancel(run_dir: str | Path) -> str:
    """scancel the run directory's job; returns what happened. (A sweep directory's job array:
    launcher/sweep/array.py's cancel_array, which `packrun cancel` picks.)"""
    job_id = job_id_of(run_dir)
    info = job_info(job_id)
    if info.ended:
        return f"job {job_id} already ended: {info.state}"
    scancel(job_id)
    return f"cancelled job {job_id} (it was {info.state})"


def status(run_dir: str | Path) -> str:
    """State, elapsed time, nodes and training progress (metrics.jsonl) of a submitted run."""
    run_dir = Path(run_dir)
    job_id = job_id_of(run_dir)
    info = _from_scontrol(job_id) or _from_sacct(job_id)
    lines = [f"job {job_id}: {_describe(info) if info else 'ended; ' + FORGOTTEN}"]
    rows = read_metrics(run_dir)
    epochs = spec_from_json(run_dir).epochs
    if rows:
        progress = f"epoch {rows[-1]['epoch']}/{epochs}"
        best = best_row(rows)
        if best:
            progress += f", best acc so far {best['val_acc']} (epoch {best['epoch']})"
        lines.append(progress)
    else:
        lines.append(f"no epoch finished yet (of {epochs})")
    if (run_dir / LAST_CKPT).exists():
        lines.append(f"resumable checkpoint: {run_dir / LAST_CKPT}")
    return "\n".join(lines + _attempt_lines(run_dir, info))


def _attempt_lines(run_dir: Path, info: JobInfo | None) -> list[str]:
    """The run's own view (launcher/core/rundir/state.py): its attempt and the newest failure."""
    rs = read_run_state(run_dir)
    if rs is None:
        return []
    phase = str(rs.state)
    if (info is None or info.ended) and rs.state in (Phase.RUNNING, Phase.RESTARTING):
        phase = f"ended by Slurm ({info.state if info else 'job forgotten'})"  # e.g. scancel
    lines = []
    if rs.attempt:
        of = f" of {rs.max_restarts + 1}" if rs.max_restarts is not None else ""
        at = f"epoch {rs.epoch}" + (f" step {rs.step}" if rs.step else "")
        lines.append(f"run {phase}, attempt {rs.attempt}{of}, at {at}")
    if rs.failure:
        lines += rs.failure.splitlines()
    return lines


def _describe(info: JobInfo) -> str:
    text = info.state
    if info.reason:
        text += f" ({info.reason})"
    if info.elapsed and info.state != "PENDING":
        text += f", elapsed {info.elapsed}"
    if info.nodes:
        text += f", nodes {info.nodes}"
    if info.restarts:
        text += f", requeued {info.restarts} time(s)"
    return text


# ---------------------------------------------------------------------------------------------
# Following a job
# ---------------------------------------------------------------------------------------------

def _poll(job_id: str) -> JobInfo:
    """job_info, riding out a slurmctld that is briefly unreachable (failover, restart)."""
    deadline = time.monotonic() + OUTAGE_S
    while True:
        try:
            return job_info(job_id)
        except SlurmUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(2 * POLL_S)


def follow(run_dir: str | Path, console: TextIO | None = None, poll_s: float = POLL_S) -> int:
    """Follow the run directory's job to its end, streaming rank 0's log; returns its status.
    Without `console`, the lines are logged on stdout (launcher/core/log.py: --quiet keeps a failed
    job's summary and report, and no copy of rank 0's log)."""
    run_dir = Path(run_dir)
    job_id = job_id_of(run_dir)
    follower = LogFollower(run_dir / worker_log(0), console or log_console())
    seen = None
    try:
        while True:
            info = _poll(job_id)
            changed = seen is None or (info.state, info.restarts) != (seen.state, seen.restarts)
            if seen is not None and info.restarts > seen.restarts:
                _say_requeue(console, run_dir, info.restarts)
            if changed and not info.ended:
                note = f"; release it with `scontrol release {job_id}`" \
                    if info.state in HELD else ""
                say(console, f"job {job_id} {_describe(info)}{note}")
            seen = info
            follower.poll(final=info.ended)
            if info.ended:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        say(console, f"stopped following job {job_id}; it keeps running: packrun status "
                      f"{run_dir} / packrun cancel {run_dir}")
        return 130
    say(console, _summary(info, run_dir), logging.INFO if info.status == 0 else logging.ERROR)
    if info.status != 0:
        report = _failure_report(info, run_dir)
        if console is None:
            log.error(report.rstrip("\n"), extra=STDOUT)
        else:
            console.write(report)
    return info.status


def _say_requeue(console: TextIO | None, run_dir: Path, restarts: int) -> None:
    """The job was requeued: why (failure.json of the attempt that ended) and which attempt of
    how many comes next."""
    record = read_failure(run_dir)
    if record and record.get("attempt") == restarts:
        for line in summary(record).splitlines():
            say(console, line.strip())
    try:
        allowed = max_restarts(spec_from_json(run_dir), "slurm")
        say(console, f"attempt {restarts + 1} of {allowed + 1}")
    except UserError:
        say(console, f"attempt {restarts + 1}")


def say(console: TextIO | None, text: str, level: int = logging.INFO) -> None:
    if console is None:
        log.log(level, f"packrun: {text}", extra=STDOUT)
        return
    console.write(f"packrun: {text}\n")
    console.flush()


def _summary(info: JobInfo, run_dir: Path) -> str:
    text = f"job {info.job_id} {info.state}, exit code {info.exit_code}"
    if info.signal:
        text += f" (signal {info.signal})"
    if info.elapsed:
        text += f", elapsed {info.elapsed}"
    if info.restarts:
        text += f", requeued {info.restarts} time(s)"
    if info.exit_code == EXIT_REQUEUE:
        text += (f"; the workers saved {LAST_CKPT} on request: resume with "
                 f"`packrun run --resume {run_dir}`")
    return text


def _logs(run_dir: Path, job_id: str) -> list[Path]:
    batch = run_dir / slurm_output(job_id)
    logs = sorted((run_dir / LOGS).glob("*.log")) + sorted((run_dir / LOGS).glob("*.out"))
    return [p for p in [batch, *logs] if p.is_file()]


def _failing_log(run_dir: Path, job_id: str) -> Path | None:
    """The log that shows why the job failed: the first worker log with a Python failure, else
    the batch script's output."""
    workers = sorted((run_dir / LOGS).glob("worker_*.log"),
                     key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    for path in workers:
        if PYTHON_FAILURE.search(path.read_text(errors="replace")):
            return path
    batch = run_dir / slurm_output(job_id)
    return batch if batch.is_file() else None


def _rank_outcomes(run_dir: Path) -> list[str]:
    """What each rank left in logs/worker_<rank>.exit: the failing ones, named."""
    try:
        spec = spec_from_json(run_dir)
    except UserError:
        return []  # not a run directory packrun wrote: the logs below are all there is
    found = []
    for rank in range(spec.nodes * spec.cards_per_node):
        try:
            code = (run_dir / worker_exit(rank)).read_text().strip()
        except FileNotFoundError:
            found.append(f"rank {rank} was killed or never started (no exit status); "
                         f"log {run_dir / worker_log(rank)}")
            continue
        if code not in ("0", str(EXIT_REQUEUE)):
            found.append(f"rank {rank} exited with status {code}; log {run_dir / worker_log(rank)}")
    return found


def _failure_report(info: JobInfo, run_dir: Path) -> str:
    lines = [f"packrun: {line}" for line in _rank_outcomes(run_dir)]
    lines += ["packrun: logs:"] + [f"  {p}" for p in _logs(run_dir, info.job_id)]
    failing = _failing_log(run_dir, info.job_id)
    if failing:
        last = tail_lines(failing)
        lines += [f"packrun: last {len(last)} lines of {failing}:"] + last
    return "\n".join(lines) + "\n"
