"""Site customisation: env_setup / env / sbatch_extra, template_dir overrides, `packrun
templates`, and `packrun node-launch` inside a hand-written sbatch script.

The launch scripts run for real with stubs: bin/python (the interpreter a render names) and
mpirun on PATH append what they see to a log, after the env_setup lines appended theirs, so the
order is on record. The last test needs the local Slurm cluster (tests/cluster/slurm_up.sh):
it skips without one, and fails in CI (CI=true).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli.main import Commands
from launcher.core.errors import UserError
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.metrics import read_metrics
from launcher.core.rundir.names import PREEMPT_FLAG, worker_exit
from launcher.core.spec import build_spec, load_job, read_job_file
from launcher.node import launch as node_launch
from launcher.render.artifacts import render_artifacts, write_run_dir
from launcher.render.templates import describe, launch_templates, templates_command
from launcher.slurm import client as slurm
from launcher.slurm.env import SlurmEnvironment
from tests.helpers import (
    REPO,
    STUB_LAUNCHER,
    need_tool,
    packrun_argv,
    packrun_env,
    processes_of,
    wait_for,
    write_tiny_job,
)

ASCEND_SETUP = "source /usr/local/Ascend/ascend-toolkit/set_env.sh"
# Three setup lines: order, a variable one line sets and the next reads, an unset variable read
# (vendor scripts do that; the block turns `set -u` off around them).
SETUP = ['echo "setup 1" >> "$SITE_LOG"', "export FROM_SETUP=yes",
         'echo "setup 2 $FROM_SETUP ${NOT_SET_ANYWHERE:-}$NOT_SET_EITHER" >> "$SITE_LOG"']
SITE_ENV = {"SITE_VAR": "a b'c $HOME"}


def site_job(make_job, **keys):
    return load_job(make_job(**keys), {"env_setup": SETUP, "env": SITE_ENV})


# --- the keys ---------------------------------------------------------------------------------

@pytest.mark.unit
def test_toml_lists_and_tables_round_trip_through_job_json(make_job, tmp_path):
    job = make_job()
    with open(job, "a") as f:
        f.write('env_setup = ["source /x/set_env.sh", "module load y"]\n'
                'sbatch_extra = ["--exclusive", "--constraint=a100"]\n'
                '[env]\nHCCL_BUFFSIZE = "200"\nOMP_NUM_THREADS = 4\n')
    spec = load_job(job)
    assert spec.env_setup == ("source /x/set_env.sh", "module load y")
    assert spec.env == {"HCCL_BUFFSIZE": "200", "OMP_NUM_THREADS": "4"}
    run_dir, _ = write_run_dir(spec)
    assert spec_from_json(run_dir) == spec
    assert json.loads((run_dir / "job.json").read_text())["spec"]["env"]["HCCL_BUFFSIZE"] == "200"


@pytest.mark.unit
def test_cli_values_from_fire(make_job):
    spec = load_job(make_job(), {"env_setup": "module load x", "env": {"A": 1},
                                 "sbatch_extra": ["--exclusive"]})
    assert spec.env_setup == ("module load x",) and spec.env == {"A": "1"}
    assert spec.sbatch_extra == ("--exclusive",)


@pytest.mark.unit
@pytest.mark.parametrize("keys, message", [
    ({"env_setup": ["a\nb"]}, r"key 'env_setup': 'a\\nb' holds a newline; give one line"),
    ({"env_setup": ["ok", 3]}, r"key 'env_setup' must be a list of strings; entry int 3"),
    ({"env": {"1X": "v"}}, r"key 'env': '1X' is not a variable name"),
    ({"env": {"X": "a\rb"}}, r"key 'env': 'a\\rb' holds a newline"),
    ({"env": {"X": True}}, r"key 'env': X is bool True; values are strings"),
    ({"sbatch_extra": ["exclusive"]}, (r"key 'sbatch_extra': 'exclusive' is not an sbatch option "
                                       r"starting with --")),
    ({"template_dir": "/no/such/dir"}, (r"key 'template_dir': /no/such/dir does not exist; give "
                                        r"a directory holding templates")),
])
def test_bad_site_values_are_named(make_job, keys, message):
    with pytest.raises(UserError, match=message):
        load_job(make_job(), keys)


@pytest.mark.unit
def test_tables_only_for_table_keys(make_job):
    job = make_job()
    with open(job, "a") as f:
        f.write("[training]\nepochs = 2\n")
    with pytest.raises(UserError, match=r"\[training\] is a table; job files use flat keys only "
                                        r".*only env take a table"):
        read_job_file(job)


# --- rendering --------------------------------------------------------------------------------

@pytest.mark.unit
def test_site_lines_are_verbatim_and_env_is_quoted_in_every_launch_script(make_job):
    for launcher, device, script in [("msrun", "CPU", "msrun.sh"), ("mpirun", "CPU", "mpirun.sh"),
                                     ("mpirun", "CPU", "mpi_task.sh"),
                                     ("rank_table", "Ascend", "rank_table.sh")]:
        spec = site_job(make_job, launcher=launcher, device=device, device_ips="1.1.1.1")
        text = render_artifacts(spec, "/runs/x")[script]
        assert "# --- site setup (env_setup: verbatim" in text, script
        block = text.split("# --- site setup", 1)[1].split("# --- end of site setup ---")[0]
        assert [line.strip() for line in block.splitlines() if line.strip() in SETUP] == SETUP
        assert "export SITE_VAR=\"a b'c \\$HOME\"" in block, script  # shellsafe.sh


@pytest.mark.unit
def test_sbatch_extra_lines_join_the_header(make_job):
    spec = load_job(make_job(), {"sbatch_extra": ["--exclusive", "--constraint=a100&ib"]})
    sbatch = render_artifacts(spec, "/runs/x", slurm=True)["job.sbatch"]
    header = sbatch.split("\nset -uo pipefail", 1)[0]
    assert "#SBATCH --exclusive\n#SBATCH --constraint=a100&ib\n" in header
    assert "site #SBATCH options (sbatch_extra: verbatim" in header


@pytest.mark.unit
def test_no_site_keys_no_site_block(make_job):
    art = render_artifacts(load_job(make_job()), "/runs/x", slurm=True)
    assert not any("site" in text for text in art.values())


@pytest.mark.unit
def test_typical_ascend_setup_passes_shellcheck(make_job, tmp_path):
    need_tool("shellcheck", "to lint the scripts a typical Ascend site setup renders")
    spec = load_job(make_job(), {"env_setup": [ASCEND_SETUP, "module load openmpi"],
                                 "env": {"HCCL_BUFFSIZE": "200"},
                                 "sbatch_extra": ["--exclusive"], "device": "Ascend"})
    for launcher in ("msrun", "rank_table", "mpirun"):
        art = render_artifacts(spec.replace(launcher=launcher, device_ips="1.1.1.1"), "/runs/x",
                               slurm=launcher == "msrun")
        for name, text in art.items():
            if text.startswith("#!/bin/bash"):
                path = tmp_path / launcher / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                r = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
                assert r.returncode == 0, f"{launcher}/{name}:\n{r.stdout}"


# --- the launch scripts run the setup first -----------------------------------------------------

@pytest.fixture
def stubs(tmp_path):
    """(stub python, environment with a stub mpirun first on PATH and SITE_LOG set)."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for name in ("python", "mpirun"):
        (bin_dir / name).write_text(STUB_LAUNCHER)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               SITE_LOG=str(tmp_path / "site.log"))
    env.pop("NOT_SET_EITHER", None)
    return bin_dir / "python", env


@pytest.mark.unit
@pytest.mark.parametrize("launcher, device, keys", [
    ("msrun", "CPU", {"master_port": 8118}),
    ("mpirun", "GPU", {}),
    ("rank_table", "Ascend", {"device_ips": "1.1.1.1", "node_checks": "off"}),  # (no NPU here)
])
def test_env_setup_runs_in_order_before_the_launch(make_job, stubs, launcher, device, keys):
    python, env = stubs
    # (bind_cores off: the stub interpreter would also stand in for the launch's core split)
    spec = site_job(make_job, launcher=launcher, device=device, bind_cores=False, **keys)
    _run_dir, command = write_run_dir(spec, python=str(python))
    r = subprocess.run(command.split("   #")[0], shell=True, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = Path(env["SITE_LOG"]).read_text().splitlines()
    assert lines[:2] == ["setup 1", "setup 2 yes "], lines
    assert lines[2].startswith("launch a b'c $HOME yes "), lines   # env quoted; setup's export seen
    assert len(lines) == 3


# --- template_dir -----------------------------------------------------------------------------

@pytest.mark.unit
def test_a_site_override_of_one_template_is_used_and_the_rest_inherited(make_job, tmp_path):
    site = tmp_path / "site"
    assert templates_command("job.sbatch.j2", str(site)).startswith("packrun: copied")
    sbatch = site / "job.sbatch.j2"
    # (packrun's own #SBATCH lines are printed from a list, launcher/render/sbatch.py: a site
    # adds its own after the loop)
    sbatch.write_text(sbatch.read_text().replace("{% endfor %}\n",
                                                 "{% endfor %}\n#SBATCH --comment=our-site\n", 1))
    spec = load_job(make_job(), {"template_dir": str(site)})
    art = render_artifacts(spec, "/runs/x", slurm=True)
    plain = render_artifacts(spec.replace(template_dir=""), "/runs/x", slurm=True)
    assert "#SBATCH --comment=our-site\n" in art["job.sbatch"]
    assert "our-site" not in plain["job.sbatch"]
    assert art["msrun.sh"] == plain["msrun.sh"]                     # inherited
    with pytest.raises(UserError, match=r"job.sbatch.j2 exists; remove it first"):
        templates_command("job.sbatch.j2", str(site))
    with pytest.raises(UserError, match=r"no launch template 'nope.j2'; choose one of"):
        templates_command("nope.j2", str(site))
    assert "job.sbatch.j2   (overridden in" in templates_command(template_dir=str(site))


@pytest.mark.unit
def test_a_template_dir_that_vanished_after_the_render_is_named(make_job, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    spec = load_job(make_job(), {"template_dir": str(site)})
    site.rmdir()
    with pytest.raises(UserError, match=r"key 'template_dir': .*site is not a directory"):
        render_artifacts(spec, "/runs/x")


@pytest.mark.parametrize("launcher, name, body, says", [
    # a rank_table.sh.j2 copied before the ranks' supervision moved into Python
    ("rank_table", "rank_table.sh.j2", '#!/bin/bash\n{% include "_stop_ranks.sh.j2" %}\n',
     r"includes _stop_ranks.sh.j2, which this packrun does not have"),
    ("msrun", "msrun.sh.j2", "#!/bin/bash\necho {{ no_such_variable }}\n",
     r"uses a variable this packrun does not pass \('no_such_variable' is undefined\)"),
])
@pytest.mark.unit
def test_a_site_template_of_another_packrun_version_is_one_line_and_no_run_dir(
        make_job, tmp_path, launcher, name, body, says):
    site, out = tmp_path / "site", tmp_path / "out"
    site.mkdir()
    (site / name).write_text(body)
    keys = {"template_dir": str(site), "launcher": launcher}
    if launcher == "rank_table":
        keys |= {"device": "Ascend", "device_ips": "10.0.0.1"}
    spec = load_job(make_job(), keys)
    with pytest.raises(UserError, match=rf"template {site / name} {says}: .*packrun templates "
                                        rf"--copy {name} DIR"):
        write_run_dir(spec, out=str(out))
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.unit
def test_every_launch_template_states_its_variables(capsys):
    names = [p.name for p in launch_templates()]
    assert {"msrun.sh.j2", "job.sbatch.j2", "site_setup.sh.j2"} <= set(names)
    for path in launch_templates():
        assert describe(path)[1] != "(none stated)", path.name
    Commands().templates()
    out = capsys.readouterr().out
    assert "site_setup.sh.j2\n" in out and "variables: env_setup (shell lines)" in out


# --- node-launch --------------------------------------------------------------------------------

@pytest.mark.unit
def test_node_launch_outside_slurm_takes_flags_and_passes_the_exit_code(make_job, stubs,
                                                                        monkeypatch):
    python, env = stubs
    for k in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("SITE_LOG", env["SITE_LOG"])
    monkeypatch.setenv("STUB_EXIT", "3")
    monkeypatch.setenv("SITE_VAR", "")
    # (bind_cores off: the stub interpreter, exiting 3, would also stand in for the core split;
    # a documentation address as the master: several nodes refuse a loopback one)
    spec = load_job(make_job(), {"nodes": 2, "cards_per_node": 2, "bind_cores": False})
    run_dir, _ = write_run_dir(spec, slurm=True, python=str(python))
    with pytest.raises(UserError, match=r"give --node_rank"):
        node_launch.node_launch_command(str(run_dir))
    assert node_launch.node_launch_command(str(run_dir), 0, "192.0.2.1", 8118) == 3
    launch = Path(env["SITE_LOG"]).read_text()
    assert "--node_rank=0 --master_addr=192.0.2.1 --master_port=8118" in launch
    plain, _ = write_run_dir(spec.replace(nodes=1))
    with pytest.raises(UserError, match=r"node-launch starts msrun.sh of `packrun render JOB "
                                        r"--slurm"):
        node_launch.node_launch_command(str(plain), 0, "127.0.0.1", 8118)


@pytest.mark.unit
def test_node_launch_forwards_signals(make_job, stubs):
    python, env = stubs
    run_dir, _ = write_run_dir(load_job(make_job(), {"bind_cores": False}), slurm=True,
                               python=str(python))  # (the stub stands in for msrun only)
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")} | {"STUB_SLEEP": "60",
                                                                         "SITE_VAR": ""}
    proc = subprocess.Popen(packrun_argv("node-launch", run_dir, "--node_rank=0",
                                         "--master_addr=127.0.0.1", "--master_port=8118"),
                            cwd=REPO, env=packrun_env(env))
    try:
        wait_for(lambda: Path(env["SITE_LOG"]).exists(), 30, "the stub launch")
        proc.send_signal(signal.SIGUSR1)                  # stop after this step, please
        wait_for(lambda: (run_dir / PREEMPT_FLAG).exists(), 10, "preempt.requested")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        wait_for(lambda: not processes_of(run_dir), 10, "no process left")
    finally:
        proc.kill()


@pytest.mark.unit
def test_node_launch_reads_slurm_and_derives_the_port():
    env = SlurmEnvironment({"SLURM_JOB_ID": "41234", "SLURM_NODEID": "1",
                                  "SLURM_LOCALID": "0", "SLURM_JOB_NUM_NODES": "2",
                                  "SLURM_JOB_NODELIST": "10.9.9.[7-8]"})
    spec = build_spec({"nodes": 2, "train_dir": "/t", "val_dir": "/v"}, check_paths=False)
    assert node_launch.node_rank(spec, None, env) == 1
    assert node_launch.master_addr(spec, None, env) == "10.9.9.7"
    assert node_launch.master_addr(spec, "10.0.0.5", env) == "10.0.0.5"
    assert node_launch.master_port(spec, None, env) == 20000 + 41234 % 20000
    assert node_launch.master_port(spec.replace(master_port=8118), None, env) == 8118
    node_launch.check_allocation(spec, env)
    with pytest.raises(UserError, match=r"the Slurm job has 2 node\(s\) but the run was rendered "
                                        r"for nodes = 1"):
        node_launch.check_allocation(spec.replace(nodes=1), env)


@pytest.mark.cluster("slurm")
def test_hand_written_sbatch_script_runs_node_launch(cluster, digits_2class, tmp_path):
    job = write_tiny_job(tmp_path / "tiny.toml", digits_2class, output_dir=None,
                         cards_per_node=2)
    setup_log = tmp_path / "setup.log"
    spec = load_job(job, {"env_setup": [f'echo "setup on $(hostname)" >> {setup_log}']})
    run_dir, _ = write_run_dir(spec, slurm=True, out=str(tmp_path / "runs"))
    script = tmp_path / "mine.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --nodes=1 --ntasks-per-node=1 --cpus-per-task=2 --output={tmp_path}/out-%j\n"
        f"srun --ntasks-per-node=1 {sys.executable} -m launcher.cli.main node-launch \"$1\"\n")
    job_id = subprocess.run(["sbatch", "--parsable", f"--chdir={REPO}", str(script),
                             str(run_dir)], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    try:
        wait_for(lambda: slurm.job_info(job_id).ended, 300, f"job {job_id}")
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
    out = (tmp_path / f"out-{job_id}").read_text()
    assert slurm.job_info(job_id).state == "COMPLETED", out[-4000:]
    assert f"scheduler {slurm.job_info(job_id).nodes}:{20000 + int(job_id) % 20000}" in out
    assert setup_log.read_text().startswith("setup on ")
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]
    for rank in (0, 1):
        assert (run_dir / worker_exit(rank)).read_text().strip() == "0"
