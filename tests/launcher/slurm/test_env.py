"""SlurmEnvironment: the Slurm variables of a task, and the allocation's hosts (scontrol, else
packrun's own hostlist expander). Pure: fake environments, fake scontrol on PATH."""

import pytest

from launcher.core.errors import UserError
from launcher.slurm.env import SlurmEnvironment

pytestmark = pytest.mark.unit

TASK = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1", "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NTASKS": "2"}


@pytest.fixture
def no_scontrol(tmp_path, monkeypatch):
    """PATH without scontrol: the hosts come from launcher.core.hostlist."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """Install `scontrol` on PATH running the given shell body."""
    def install(body: str):
        bin_dir = tmp_path / "fake-bin"
        bin_dir.mkdir(exist_ok=True)
        script = bin_dir / "scontrol"
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", str(bin_dir))
    return install


def test_detect():
    assert SlurmEnvironment.detect(TASK)
    assert not SlurmEnvironment.detect({"HOME": "/root"})
    assert not SlurmEnvironment.detect({"SLURM_JOB_ID": ""})


def test_ranks_and_job_from_the_variables():
    env = SlurmEnvironment(TASK)
    assert (env.job_id, env.job_nodelist, env.num_nodes) == ("42", "node[01-02]", 2)
    assert (env.node_rank, env.global_rank, env.local_rank, env.world_size) == (1, 1, 0, 2)
    assert env.restart_count == 0  # unset before the first requeue
    assert SlurmEnvironment(TASK | {"SLURM_RESTART_COUNT": "3"}).restart_count == 3


def test_older_variable_names_are_understood():
    old = {"SLURM_JOB_ID": "7", "SLURM_NODELIST": "a1", "SLURM_NNODES": "1"}
    env = SlurmEnvironment(old)
    assert (env.job_nodelist, env.num_nodes) == ("a1", 1)


def test_missing_or_bad_variables_name_the_variable():
    with pytest.raises(UserError, match=r"SLURM_NODEID is not set: this is not running inside a "
                                        r"Slurm job"):
        _ = SlurmEnvironment({"SLURM_JOB_ID": "1"}).node_rank  # (the property raises)
    with pytest.raises(UserError, match=r"SLURM_PROCID is 'x'; Slurm sets it to a number"):
        _ = SlurmEnvironment(TASK | {"SLURM_PROCID": "x"}).global_rank


@pytest.mark.parametrize("nodelist, hosts", [
    ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("a1,b[2-3]", ["a1", "b2", "b3"]),
    ("gpu17", ["gpu17"]),
])
def test_hosts_without_scontrol_use_the_python_expander(no_scontrol, nodelist, hosts):
    env = SlurmEnvironment(TASK | {"SLURM_JOB_NODELIST": nodelist})
    assert env.hosts == hosts
    assert env.master_addr == hosts[0]


def test_hosts_come_from_scontrol_when_it_answers(fake_scontrol):
    # scontrol is the authority (it knows about nodes the expander cannot, e.g. aliases)
    fake_scontrol('[ "$1 $2 $3" = "show hostnames node[01-02]" ] && printf "n-b\\nn-a\\n"')
    env = SlurmEnvironment(TASK)
    assert env.hosts == ["n-b", "n-a"] and env.master_addr == "n-b"


def test_a_failing_scontrol_falls_back_to_the_expander(fake_scontrol):
    fake_scontrol('echo "scontrol: fatal: Could not establish a configuration source" >&2; exit 1')
    assert SlurmEnvironment(TASK).hosts == ["node01", "node02"]


def test_a_bad_nodelist_is_a_user_error(no_scontrol):
    with pytest.raises(UserError, match=r"hostlist 'node\[01-': '\[' is never closed"):
        _ = SlurmEnvironment(TASK | {"SLURM_JOB_NODELIST": "node[01-"}).hosts
