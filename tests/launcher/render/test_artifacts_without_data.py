"""A render is the dry run of a launch, also on a laptop or login node that does not hold the
cluster's data: missing data folders, checkpoint and hccn.conf are warnings in `render` and
`check --quick`, errors in `run`, `debug`, `submit` and a full `check`. Each command stops before
starting anything: the CLI's entry runs in the test's process (tests/helpers.packrun_in_process),
in a fresh clone's environment."""


import pytest

from tests.helpers import REPO, packrun_in_process, write_job

pytestmark = pytest.mark.unit



# A fresh clone's shell: only the system PATH (no venv, no packrun script).
FRESH_SHELL = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}


@pytest.fixture
def no_data_job(tmp_path):
    """The tutorial's job file as a fresh clone has it: relative paths to data that is not here."""
    job = tmp_path / "canidae_finetune.toml"
    job.write_text((REPO / "jobs" / "canidae_finetune.toml").read_text())
    return job


README_RENDERS = {
    "msrun two nodes": ["--launcher=msrun", "--nodes=2", "--cards_per_node=8",
                        "--hosts=10.0.0.[1-2]", "--master_port=8118"],
    "slurm": ["--slurm", "--nodes=4", "--cards_per_node=8", "--partition=ascend"],
    "mpirun print": ["--launcher=mpirun", "--cards_per_node=2", "--print"],
}


@pytest.mark.parametrize("case", README_RENDERS, ids=list(README_RENDERS))
def test_readme_renders_work_without_the_data(tmp_path, no_data_job, case):
    r = packrun_in_process("render", no_data_job, *README_RENDERS[case], cwd=tmp_path,
                           env=FRESH_SHELL)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    for key, path in (("train_dir", "data/Canidae/train"), ("val_dir", "data/Canidae/val"),
                      ("pretrained", "resnet50.ckpt")):
        assert f"packrun: warning: {no_data_job}: key '{key}': {tmp_path / path} does not " \
               "exist" in r.stderr, r.stderr
    if "--print" not in README_RENDERS[case]:
        (run_dir,) = (tmp_path / "runs").iterdir()
        assert (run_dir / "job.json").is_file() and (run_dir / "msrun.sh").is_file()


def test_rank_table_render_without_hccn_conf_warns_and_says_how_to_write_the_table(
        tmp_path, no_data_job):
    conf = tmp_path / "no-hccn.conf"
    r = packrun_in_process("render", no_data_job, "--launcher=rank_table", "--cards_per_node=8",
                f"--hccn_conf={conf}", cwd=tmp_path, env=FRESH_SHELL)
    assert r.returncode == 0, r.stderr
    assert f"packrun: warning: hccn.conf {conf} not found" in r.stderr
    assert "rank_table.json is not rendered" in r.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "rank_table.sh").is_file() and not (run_dir / "rank_table.json").exists()
    assert r.stdout.strip().startswith(
        f"packrun rank-table --devices=0-7 --out={run_dir / 'rank_table.json'} && "
        f"bash {run_dir / 'rank_table.sh'}"), r.stdout


def test_check_quick_warns_and_full_check_errs(tmp_path, no_data_job):
    quick = packrun_in_process("check", no_data_job, "--quick", "--launcher=rank_table",
                    "--cards_per_node=8", f"--hccn_conf={tmp_path / 'none.conf'}", cwd=tmp_path,
                    env=FRESH_SHELL)
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert "warning paths: " in quick.stdout and "key 'train_dir'" in quick.stdout
    assert "warning launch: hccn.conf" in quick.stdout
    assert "0 error(s)" in quick.stdout
    # The full check (as before a run) refuses; it stops before building the network.
    full = packrun_in_process("check", no_data_job, "--device=CPU", cwd=tmp_path, env=FRESH_SHELL)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "error   paths: " in full.stderr and "key 'pretrained'" in full.stderr


@pytest.mark.parametrize("command", ["debug", "run", "submit"])
def test_run_debug_and_submit_refuse_missing_data(tmp_path, no_data_job, command):
    r = packrun_in_process(command, no_data_job, "--device=CPU", cwd=tmp_path, env=FRESH_SHELL)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"key 'train_dir': {tmp_path / 'data/Canidae/train'} does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_job_with_data_renders_without_warnings(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
    job = write_job(tmp_path / "j.toml", train_dir="train", val_dir="val")
    r = packrun_in_process("render", job, cwd=tmp_path, env=FRESH_SHELL)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
