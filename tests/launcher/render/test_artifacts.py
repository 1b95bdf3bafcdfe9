"""Rendering of launch artifacts (launcher/render/artifacts.py), the run directory, and
`packrun render`.

Golden files live in tests/launcher/render/golden/<case>/<artifact>; after a deliberate change,
regenerate them with `PACKRUN_UPDATE_GOLDEN=1 python -m pytest
tests/launcher/render/test_artifacts.py` and review the diff. CI (CI=true) refuses the variable:
there the run fails instead of rewriting the goldens it checks.
"""

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import fire
import pytest

from launcher.cli.main import Commands
from launcher.core.errors import UserError
from launcher.core.paths import TEMPLATES
from launcher.core.rundir import layout as rundir
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.layout import create_run_dir
from launcher.core.spec import load_job
from launcher.render import artifacts as render
from launcher.render.artifacts import next_command, render_artifacts, write_run_dir
from launcher.render.sbatch import sbatch_options
from tests.helpers import need_tool, stub_repo, update_requested

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = "PACKRUN_UPDATE_GOLDEN"
# Fixed machine-independent paths for goldens.
RUN_DIR = "/runs/demo-20250101-000000"
PYTHON = "/opt/venv/bin/python"
REPO = "/opt/packrun"

ASCEND8 = dict(device="Ascend", cards_per_node=8)
TWO_NODES = dict(nodes=2, hosts="10.0.0.[1-2]", master_port=8118)
DEVICE_IPS_2X8 = ",".join(f"192.168.{n}.{101 + i}" for n in (1, 2) for i in range(8))

# case name -> (job keys, --slurm)
CASES = {
    "ascend_1x8_msrun": (ASCEND8 | dict(launcher="msrun"), False),
    "ascend_1x8_rank_table": (ASCEND8 | dict(launcher="rank_table", hosts="10.0.0.1"), False),
    "ascend_1x8_mpirun": (ASCEND8 | dict(launcher="mpirun"), False),
    "ascend_2x8_msrun": (ASCEND8 | TWO_NODES | dict(launcher="msrun"), False),
    "ascend_2x8_rank_table": (ASCEND8 | TWO_NODES | dict(launcher="rank_table",
                                                         device_ips=DEVICE_IPS_2X8), False),
    "ascend_2x8_mpirun": (ASCEND8 | TWO_NODES | dict(launcher="mpirun"), False),
    "gpu_1x2_msrun": (dict(device="GPU", cards_per_node=2, launcher="msrun"), False),
    "gpu_1x2_mpirun": (dict(device="GPU", cards_per_node=2, launcher="mpirun"), False),
    "cpu_1x2_mpirun": (dict(device="CPU", cards_per_node=2, launcher="mpirun"), False),
    "slurm_ascend_2x8": (ASCEND8 | dict(nodes=2, partition="ascend", account="proj1",
                                        qos="normal", time="1-12:00:00"), True),
    "slurm_gpu_2x4": (dict(device="GPU", nodes=2, cards_per_node=4, master_addr="10.0.0.1",
                           master_port=29500, hosts="gpu[01-02]", cpus_per_task=32,
                           requeue=False, signal_before_s=0), True),
}


def spec_for(make_job, hccn_conf, keys):
    return load_job(make_job(**{"hccn_conf": str(hccn_conf)} | keys))


def render_case(make_job, hccn_conf, case):
    keys, slurm = CASES[case]
    return render_artifacts(spec_for(make_job, hccn_conf, keys), RUN_DIR, slurm=slurm,
                            python=PYTHON, repo=REPO)


def shell_scripts(artifacts):
    return {name: text for name, text in artifacts.items() if text.startswith("#!")}


# --- golden files -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(make_job, hccn_conf, case):
    artifacts = render_case(make_job, hccn_conf, case)
    folder = GOLDEN / case
    if update_requested(UPDATE_GOLDEN):  # never in CI: the run fails there
        shutil.rmtree(folder, ignore_errors=True)
        for name, text in artifacts.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    stored = {str(p.relative_to(folder)): p.read_text()
              for p in sorted(folder.rglob("*")) if p.is_file()}
    assert sorted(artifacts) == sorted(stored), f"artifacts of {case} changed"
    for name, text in artifacts.items():
        assert text == stored[name], (f"{case}/{name} differs from its golden file; if the "
                                      "change is intended, rerun with PACKRUN_UPDATE_GOLDEN=1")


def test_goldens_have_no_stale_cases():
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(CASES)


def test_ci_refuses_to_rewrite_the_goldens():
    """PACKRUN_UPDATE_GOLDEN=1 rewrites the goldens from what the code renders, so every golden
    test passes whatever it renders: under CI=true the test fails instead, saying why."""
    with pytest.raises(pytest.fail.Exception,
                       match=r"PACKRUN_UPDATE_GOLDEN=1 with CI=true: CI checks the expected "
                             r"files and never rewrites them"):
        update_requested(UPDATE_GOLDEN, {UPDATE_GOLDEN: "1", "CI": "true"})
    assert update_requested(UPDATE_GOLDEN, {UPDATE_GOLDEN: "1"}) is True         # locally
    assert update_requested(UPDATE_GOLDEN, {UPDATE_GOLDEN: "1", "CI": "false"}) is True
    assert update_requested(UPDATE_GOLDEN, {"CI": "true"}) is False              # CI's own run
    assert update_requested(UPDATE_GOLDEN, {UPDATE_GOLDEN: "0"}) is False


# --- every rendered script is valid shell -------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_scripts_pass_bash_n_and_shellcheck(make_job, hccn_conf, tmp_path, case):
    need_tool("shellcheck", "to lint every rendered script")
    scripts = shell_scripts(render_case(make_job, hccn_conf, case))
    assert scripts
    for name, text in scripts.items():
        path = tmp_path / "scripts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        shell = "sh" if text.startswith("#!/bin/sh") else "bash"
        res = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, f"{case}/{name}: {shell} -n: {res.stderr}"
        res = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, f"{case}/{name}: shellcheck:\n{res.stdout}{res.stderr}"


# --- what the scripts say (beyond the goldens) --------------------------------------------------

def test_msrun_script(make_job, hccn_conf):
    art = render_case(make_job, hccn_conf, "ascend_2x8_msrun")
    script = art["msrun.sh"]
    for flag in ("--worker_num=16", "--local_worker_num=8", '--node_rank="$NODE_RANK"',
                 "--master_port=\"$MASTER_PORT\"", '--log_dir="$RUN_DIR/logs"', "--join=True",
                 "--cluster_time_out=60", f"{REPO}/src/train.py \"$RUN_DIR\""):
        assert flag in script
    assert "MASTER_ADDR=10.0.0.1\nMASTER_PORT=8118\n" in script
    assert art["bin/python"].endswith(f"exec {PYTHON} \"$@\"\n")


def test_sbatch_script(make_job, hccn_conf):
    art = render_case(make_job, hccn_conf, "slurm_ascend_2x8")
    sbatch = art["job.sbatch"]
    directives = re.findall(r"^#SBATCH (.*)$", sbatch, re.M)
    assert directives == ["--job-name=demo", "--nodes=2", "--ntasks-per-node=1",
                          "--exclusive", "--mem=0", "--partition=ascend", "--account=proj1",
                          "--qos=normal", "--time=1-12:00:00",
                          f"--output={RUN_DIR}/slurm-%j.out", "--signal=B:USR1@120",
                          "--requeue"]
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in sbatch
    assert "srun --kill-on-bad-exit=1" in sbatch and 'bash "$RUN_DIR/msrun.sh"' in sbatch
    # the batch protocol (lock, SIGUSR1, attempts, requeue) is launcher/node/batch.py's, exec'd
    # with the srun line, so that it is the batch shell's process (Slurm's B:USR1 reaches it)
    assert 'exec "$PYTHON" -m launcher.node batch "$RUN_DIR" -- \\\n    srun ' in sbatch
    assert "trap " not in sbatch and "flock" not in sbatch and "scontrol requeue" not in sbatch
    spec = spec_for(make_job, hccn_conf, CASES["slurm_ascend_2x8"][0])
    assert directives == [o.line().removeprefix("#SBATCH ")
                          for o in sbatch_options(spec, RUN_DIR)]  # the data, printed
    assert 'NODE_RANK=$SLURM_NODEID' in art["msrun.sh"]
    gpu = render_case(make_job, hccn_conf, "slurm_gpu_2x4")["job.sbatch"]
    assert "#SBATCH --gres=gpu:4\n" in gpu and "#SBATCH --nodelist=gpu[01-02]\n" in gpu
    assert "#SBATCH --no-requeue\n" in gpu and "--signal" not in gpu
    assert "scontrol" not in gpu and "export MASTER_ADDR=10.0.0.1\n" in gpu


def test_explicit_gres_wins(make_job, hccn_conf):
    spec = spec_for(make_job, hccn_conf, dict(device="Ascend", gres="npu:8", cards_per_node=8))
    sbatch = render_artifacts(spec, RUN_DIR, slurm=True)["job.sbatch"]
    assert "#SBATCH --gres=npu:8\n" in sbatch


def test_mpirun_on_cpu_maps_ranks_onto_the_dynamic_cluster(make_job, hccn_conf):
    art = render_case(make_job, hccn_conf, "cpu_1x2_mpirun")
    assert art["hostfile"] == "localhost slots=2\n"
    script = art["mpirun.sh"]
    assert "MS_ROLE=MS_SCHED" in script and 'bash "$RUN_DIR/mpi_task.sh"' in script
    for var in ("MS_SCHED_HOST", "MS_SCHED_PORT", "MS_WORKER_NUM", "MS_TOPO_TIMEOUT"):
        assert f"-x {var}" in script
    task = art["mpi_task.sh"]
    assert 'MS_NODE_ID="$OMPI_COMM_WORLD_RANK"' in task and "MS_ROLE=MS_WORKER" in task
    assert '/dev/tcp/$MS_SCHED_HOST/$MS_SCHED_PORT' in task


def test_mpirun_on_gpu_and_ascend_runs_workers_directly(make_job, hccn_conf):
    art = render_case(make_job, hccn_conf, "ascend_2x8_mpirun")
    assert "MS_ROLE" not in art["mpirun.sh"] + art["mpi_task.sh"]
    assert art["hostfile"] == "10.0.0.1 slots=8\n10.0.0.2 slots=8\n"
    assert "-x HCCL_CONNECT_TIMEOUT" in art["mpirun.sh"]
    assert f"exec {PYTHON} {REPO}/src/train.py {RUN_DIR}\n" in art["mpi_task.sh"]
    assert f'RANK_DIR={RUN_DIR}/ranks/"$RANK_ID"' in art["mpi_task.sh"]


def test_rank_table_of_a_render(make_job, hccn_conf):
    one = json.loads(render_case(make_job, hccn_conf, "ascend_1x8_rank_table")["rank_table.json"])
    assert [d["device_ip"] for d in one["server_list"][0]["device"]] == [
        f"192.168.100.{101 + i}" for i in range(8)]
    two = json.loads(render_case(make_job, hccn_conf, "ascend_2x8_rank_table")["rank_table.json"])
    assert [s["server_id"] for s in two["server_list"]] == ["10.0.0.1", "10.0.0.2"]
    assert two["server_list"][1]["device"][0] == {"device_id": "0", "device_ip": "192.168.2.101",
                                                  "rank_id": "8"}


def test_hccl_timeout_is_clamped_to_what_hccl_accepts(make_job, hccn_conf):
    def timeout(seconds):
        spec = spec_for(make_job, hccn_conf, ASCEND8 | dict(cluster_timeout=seconds))
        return re.search(r"HCCL_CONNECT_TIMEOUT=(\d+)",
                         render_artifacts(spec, RUN_DIR)["msrun.sh"]).group(1)
    assert (timeout(60), timeout(600), timeout(7200)) == ("120", "600", "7200")
    cpu = spec_for(make_job, hccn_conf, dict(cards_per_node=2))
    assert "HCCL" not in render_artifacts(cpu, RUN_DIR)["msrun.sh"]


def test_small_clusters_beat_their_heart_once_a_second_unless_the_job_says(make_job, hccn_conf):
    """MindSpore's cluster forms, and lets a process exit, only at a heartbeat (every 3 to 5 s by
    default): up to 10 s of every small attempt. Up to 64 ranks packrun asks for 1 s; the
    job's env wins; bigger clusters keep MindSpore's spread."""
    def heartbeat(keys, script="msrun.sh"):
        env = keys.pop("env", {})
        spec = dataclasses.replace(spec_for(make_job, hccn_conf, keys), env=env)
        text = render_artifacts(spec, RUN_DIR)[script]
        return re.findall(r"^export (MS_RETRY_INTERVAL_\w+)=(\S+)$", text, re.M)
    fast = [("MS_RETRY_INTERVAL_LOWER", "1"), ("MS_RETRY_INTERVAL_UPPER", "1")]
    assert heartbeat(dict(cards_per_node=2)) == fast
    assert heartbeat(dict(cards_per_node=2, launcher="mpirun"), "mpirun.sh") == fast
    assert heartbeat(ASCEND8 | TWO_NODES | dict(launcher="msrun")) == fast
    assert heartbeat(ASCEND8 | dict(nodes=9, hosts="10.0.0.[1-9]", master_port=8118)) == []
    assert heartbeat(dict(cards_per_node=2, env={"MS_RETRY_INTERVAL_UPPER": "9"})) == [
        ("MS_RETRY_INTERVAL_UPPER", "9")]


def test_paths_with_spaces_are_quoted(make_job, hccn_conf):
    spec = spec_for(make_job, hccn_conf, dict(cards_per_node=2, launcher="mpirun"))
    art = render_artifacts(spec, "/my runs/x", python="/opt/my venv/bin/python",
                           repo="/src/pack run")
    assert "RUN_DIR='/my runs/x'\nPYTHON='/opt/my venv/bin/python'\n" in art["mpirun.sh"]
    assert ("exec '/opt/my venv/bin/python' '/src/pack run/src/train.py' '/my runs/x' >> "
            "'/my runs/x/logs/worker_'\"$RANK_ID.log\" 2>&1\n") in art["mpi_task.sh"]


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("keys, slurm, message", [
    (dict(launcher="mpirun"), True, "--slurm starts msrun on every node"),
    (dict(nodes=2, master_port=8118), False, "set master_addr (the address of node 0) or hosts"),
    (dict(nodes=2, hosts="n[1-2]"), False, "set master_port to a port free on node 0"),
    (dict(nodes=2, launcher="mpirun"), False, "set hosts (the nodes in rank order"),
    (dict(nodes=2, hosts="n1,n2,n3", master_port=1), False, "names 3 node(s) but nodes = 2"),
    (dict(nodes=2, hosts="n1,n1", master_port=1), False, "n1 is listed twice"),
    (dict(hosts="n[2-1]"), False, "range 2-1 runs backwards"),
    (ASCEND8 | dict(launcher="rank_table", nodes=2, hosts="10.0.0.[1-2]"), False,
     "key 'device_ips' is needed for a rank table over 2 nodes"),
    (ASCEND8 | dict(launcher="rank_table", hosts="10.0.0.1", device_ips="192.168.1.1"), False,
     "key 'device_ips' has 1 address(es); 1 node(s) x 8 card(s) need 8"),
    (ASCEND8 | dict(launcher="rank_table", hosts="node1"), False,
     "'node1' is not an IPv4 address"),
    (ASCEND8 | dict(launcher="rank_table", hosts="10.0.0.1", cards_per_node=9), False,
     "has no address for device 8"),
    (dict(partition="gpu large"), True, "key 'partition' is 'gpu large'"),
])
def test_render_errors_name_the_culprit(make_job, hccn_conf, keys, slurm, message):
    with pytest.raises(UserError, match=re.escape(message)):  # at validation, or at render
        render_artifacts(spec_for(make_job, hccn_conf, keys), RUN_DIR, slurm=slurm)


def test_missing_hccn_conf(make_job, tmp_path):
    spec = load_job(make_job(hosts="10.0.0.1", launcher="rank_table", hccn_conf=str(
        tmp_path / "none.conf"), **ASCEND8))
    with pytest.raises(UserError, match=re.escape(f"hccn.conf {tmp_path / 'none.conf'} not "
                                                  "found")):
        render_artifacts(spec, RUN_DIR)


@pytest.mark.parametrize("keys, message", [
    (dict(launcher="rank_table", device="GPU"), "launcher 'rank_table' starts Ascend cards"),
    (dict(launcher="rank_table"), "device is 'CPU'"),
    (dict(time="2h"), "key 'time' is '2h'; Slurm takes MM, MM:SS"),
    (dict(time="1:2:3:4"), "key 'time' is '1:2:3:4'"),
    (dict(cards_per_node=17), "key 'cards_per_node' is 17; it must be <= 16"),
    (dict(nodes=0), "key 'nodes' is 0; it must be >= 1"),
    (dict(master_port=70000), "it must be <= 65535"),
    (dict(launcher="slurm"), "choose one of 'msrun', 'rank_table', 'mpirun'"),
])
def test_spec_checks_launch_keys(make_job, keys, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_job(make_job(**keys))


@pytest.mark.parametrize("time", ["30", "30:00", "2:00:00", "1-12", "1-12:30", "1-12:30:00"])
def test_slurm_time_formats(make_job, time):
    assert load_job(make_job(time=time)).time == time


# --- the run directory --------------------------------------------------------------------------

def test_write_run_dir(make_job, hccn_conf, tmp_path):
    spec = spec_for(make_job, hccn_conf, dict(cards_per_node=2))
    run_dir, command = write_run_dir(spec, slurm=True, python=PYTHON, repo=REPO)
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("demo-")
    assert command == f"sbatch {run_dir / 'job.sbatch'}"
    assert spec_from_json(run_dir) == spec
    assert (run_dir / "logs").is_dir()
    files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    assert files == {"job.json", "msrun.sh", "bin/python", "job.sbatch"}
    for name in ("msrun.sh", "bin/python", "job.sbatch"):
        assert os.access(run_dir / name, os.X_OK), name
    assert not os.access(run_dir / "job.json", os.X_OK)
    assert f"RUN_DIR={run_dir}\n" in (run_dir / "msrun.sh").read_text()


def test_a_failed_render_leaves_no_run_dir(make_job, hccn_conf, tmp_path):
    spec = spec_for(make_job, hccn_conf, dict(nodes=2))
    with pytest.raises(UserError):
        write_run_dir(spec)
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("keys, command", [
    (dict(), "bash {d}/msrun.sh"),
    (dict(launcher="mpirun"), "bash {d}/mpirun.sh"),
    (TWO_NODES, "bash {d}/msrun.sh NODE_RANK   # on every node, NODE_RANK 0..1"),
    (TWO_NODES | dict(launcher="mpirun"), "bash {d}/mpirun.sh   # on 10.0.0.1, the first host"),
    (ASCEND8 | TWO_NODES | dict(launcher="rank_table"),
     "bash {d}/rank_table.sh SERVER_INDEX   # on every node, SERVER_INDEX 0..1"),
])
def test_next_command(make_job, hccn_conf, keys, command):
    spec = spec_for(make_job, hccn_conf, keys)
    assert next_command(spec, Path(RUN_DIR), slurm=False).startswith(command.format(d=RUN_DIR))


def test_run_dirs_are_unique_within_one_second(make_job, monkeypatch, tmp_path):
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20250101-000000")
    spec = load_job(make_job())
    dirs = [create_run_dir(spec) for _ in range(3)]
    assert [d.name for d in dirs] == ["demo-20250101-000000", "demo-20250101-000000-2",
                                      "demo-20250101-000000-3"]
    assert all((d / "logs").is_dir() for d in dirs)
    other = create_run_dir(spec, out=str(tmp_path / "elsewhere"))
    assert other == tmp_path / "elsewhere" / "demo-20250101-000000"


def test_run_dir_under_a_file_is_a_user_error(make_job, tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="is a file"):
        create_run_dir(load_job(make_job()), out=str(tmp_path / "afile"))


def test_write_atomic(tmp_path):
    target = tmp_path / "x.sh"
    write_atomic(target, "one\n", 0o755)
    assert target.read_text() == "one\n" and stat.S_IMODE(target.stat().st_mode) == 0o755
    write_atomic(target, "two\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["x.sh"]  # no temporary file left


# --- rendering starts nothing -------------------------------------------------------------------

def test_render_starts_no_process(make_job, hccn_conf, monkeypatch, capsys, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError(f"render started a process: {args!r}")
    monkeypatch.setattr(subprocess, "Popen", refuse)
    for name in ("fork", "system", "posix_spawn", "posix_spawnp", "execv", "execve"):
        monkeypatch.setattr(os, name, refuse)
    written = [write_run_dir(spec_for(make_job, hccn_conf, keys), slurm=slurm)[0]
               for keys, slurm in CASES.values()]
    render.render_command(str(make_job(**ASCEND8)), {}, print_only=True)
    # every case rendered (into a run directory of its own), and so did --print
    assert sorted(written) == sorted((tmp_path / "runs").iterdir()) and len(written) == len(CASES)
    assert all((d / "job.json").is_file() for d in written)
    assert re.search(r"^==> .*/job\.json <==$", capsys.readouterr().out, re.M)


# --- packrun render (command line) --------------------------------------------------------------

def cli(*args):
    return fire.Fire(Commands, command=list(args), name="packrun")


def test_cli_render_writes_and_prints_the_next_command(make_job, tmp_path, capsys):
    job = make_job()
    cli("render", str(job), "--launcher=mpirun", "--device=CPU", "--nodes=1",
        "--cards_per_node=2", f"--out={tmp_path / 'out'}")
    out, err = capsys.readouterr()
    (run_dir,) = (tmp_path / "out").iterdir()
    assert out == f"bash {run_dir / 'mpirun.sh'}\n"
    assert err == f"packrun: rendered {run_dir}\n"
    spec = spec_from_json(run_dir)
    assert (spec.launcher, spec.cards_per_node) == ("mpirun", 2)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "hostfile", "job.json", "logs", "mpi_task.sh", "mpirun.sh"]


def test_cli_render_print_writes_nothing(make_job, tmp_path, capsys):
    cli("render", str(make_job()), "--slurm", "--cards_per_node=2", "--print")
    out = capsys.readouterr().out
    for name in ("job.json", "msrun.sh", "bin/python", "job.sbatch"):
        assert re.search(rf"^==> .*/demo-YYYYmmdd-HHMMSS/{name} <==$", out, re.M), name
    assert "#SBATCH --nodes=1" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["--launcher=mpirun", "--slurm"], "--slurm starts msrun on every node"),
    (["--nodes=2"], "set master_port to a port free on node 0"),
    (["--nodes=2", "--master_port=8118"], "set master_addr (the address of node 0) or hosts"),
    (["--launcher=rank_table", "--device=GPU"], "launcher 'rank_table' starts Ascend cards"),
    (["--tim=1:00:00"], "(did you mean 'time'?)"),
])
def test_cli_render_errors_exit_2(make_job, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        cli("render", str(make_job()), *args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("packrun: error: ") and message in err and err.count("\n") == 1
    assert not list((tmp_path / "runs").glob("*")), "a failed render left a run directory"


def test_render_warns_about_missing_data_dirs_and_renders(make_job, tmp_path, capsys):
    """A render is the dry run of a launch, also where the data is not visible (a laptop, a
    login node): missing train_dir / val_dir are warnings; run, debug and submit refuse them
    (tests/launcher/render/test_artifacts_without_data.py). job.json stores them absolute."""
    job = make_job(train_dir=str(tmp_path / "missing"))
    cli("render", str(job))
    err = capsys.readouterr().err
    assert f"packrun: warning: {job}: key 'train_dir': {tmp_path / 'missing'} does not " \
        "exist" in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "job.json").read_text())["spec"]["train_dir"] == \
        str(tmp_path / "missing")


# --- the rendered scripts run -------------------------------------------------------------------

FAKE_WORKER = """import os, sys
print("rank", os.environ["RANK_ID"], "device", os.environ["DEVICE_ID"], "of",
      os.environ["RANK_SIZE"], os.environ["RANK_TABLE_FILE"])
sys.exit(int(os.environ["RANK_ID"] == os.environ.get("FAIL_RANK")))
"""


def test_rank_table_script_runs_every_card_and_reports_failures(make_job, hccn_conf, tmp_path):
    repo = stub_repo(tmp_path, FAKE_WORKER)
    keys = dict(ASCEND8, launcher="rank_table", cards_per_node=4, nodes=2, bind_cores=False,
                hosts="10.0.0.[1-2]", device_ips=",".join(DEVICE_IPS_2X8.split(",")[:8]),
                node_checks="off")  # (no NPU here: tests/launcher/preflight/test_node.py)
    run_dir, _ = write_run_dir(spec_for(make_job, hccn_conf, keys), python=sys.executable,
                               repo=repo)
    script = str(run_dir / "rank_table.sh")
    ok = subprocess.run(["bash", script, "1"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    for rank, device in [(4, 0), (7, 3)]:
        log = (run_dir / "logs" / f"worker_{rank}.log").read_text()
        assert log == f"rank {rank} device {device} of 8 {run_dir / 'rank_table.json'}\n"
    bad = subprocess.run(["bash", script, "0"], capture_output=True, text=True, timeout=60,
                         env=os.environ | {"FAIL_RANK": "2"})
    assert bad.returncode == 1 and "rank 2 exited with status 1" in bad.stderr
    usage = subprocess.run(["bash", script, "2"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "SERVER_INDEX is '2'; give 0..1" in usage.stderr


def test_msrun_script_refuses_a_bad_node_rank(make_job, hccn_conf, tmp_path):
    spec = spec_for(make_job, hccn_conf, TWO_NODES)
    run_dir, _ = write_run_dir(spec)
    res = subprocess.run(["bash", str(run_dir / "msrun.sh"), "x"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "NODE_RANK is 'x'; give 0..1" in res.stderr
    assert list((run_dir / "logs").iterdir()) == []


def test_one_server_rank_table_detects_this_servers_address(make_job, hccn_conf, monkeypatch):
    """Without hosts, the server id is this machine's address, as hccl_tools.py finds it."""
    monkeypatch.setattr(render.socket, "gethostname", lambda: "ascend01")
    monkeypatch.setattr(render.socket, "gethostbyname",
                        lambda name: {"ascend01": "10.9.8.7"}[name])
    spec = spec_for(make_job, hccn_conf, ASCEND8 | dict(launcher="rank_table"))
    table = json.loads(render_artifacts(spec, RUN_DIR)["rank_table.json"])
    assert table["server_list"][0]["server_id"] == "10.9.8.7"


def test_templates_take_the_run_directory_protocol_from_runfiles():
    """Exit statuses, flag files and log names reach the launch templates as `files.*`
    (runfiles.template_names()); none is spelt out in a template's code (comments may name
    them). A renamed log or flag then changes in one place."""
    from launcher.core.rundir import names as runfiles
    names = [runfiles.PREEMPT_FLAG, runfiles.RUN_LOCK, runfiles.RANK_TABLE_JSON,
             runfiles.WORKER_LOG_PREFIX, runfiles.SCHEDULER_LOG, runfiles.ASCEND_LOG_PREFIX,
             runfiles.MPIRUN_OUTPUT, f"{runfiles.LOGS}/", f"/{runfiles.RANKS_DIR}/",
             "msrun-node"]
    found = []
    for path in sorted(TEMPLATES.glob("*.j2")):
        if path.name == "report.html.j2":  # the report's prose, not a launch script
            continue
        code = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)
        for line in code.splitlines():
            if line.lstrip().startswith("#") and not line.startswith(("#!", "#SBATCH")):
                continue  # a comment of the rendered script
            line = re.sub(r"\{\{.*?\}\}", "", line)
            found += [f"{path.name}: {name!r} in {line.strip()!r}" for name in names
                      if name in line]
            if re.search(rf"\b{runfiles.EXIT_REQUEUE}\b", line):
                found.append(f"{path.name}: status {runfiles.EXIT_REQUEUE} in {line.strip()!r}")
    assert found == []
