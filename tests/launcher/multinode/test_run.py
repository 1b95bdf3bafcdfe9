"""`packrun run --nodes=N`: what is refused before any host is asked (one line, exit 2, no run
directory), and which launches go over ssh."""

import pytest

from launcher.core.rundir import nodes
from launcher.multinode.run import is_multinode
from tests.helpers import packrun_in_process

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("flags, said", [
    (["--nodes=2"], "nodes = 2: give the hosts to start them on"),
    (["--nodes=2", "--hosts=a,b,c"], "key 'hosts' names 3 host(s) but nodes = 2"),
    (["--nodes=2", "--hosts=a,a"], "key 'hosts': a is listed twice"),
    (["--nodes=2", "--hosts=a,b", "--launcher=mpirun"],
     "launcher 'mpirun' on 2 nodes: mpirun starts the other nodes with its own ssh"),
    (["--nodes=2", "--hosts=a,b", "--ssh=-o ProxyCommand=nc %h %p"],
     "key 'ssh': -o ProxyCommand runs a command"),
    (["--nodes=2", "--hosts=a,b", "--ssh=-L 80:x:80"],
     "key 'ssh': '-L' is not an ssh option packrun passes on"),
])
def test_refused_before_any_host_is_asked(make_job, tmp_path, flags, said):
    job = make_job()
    r = packrun_in_process("run", job, *flags)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("packrun: error: ")]
    assert errors == [f"packrun: error: {said}"] or (len(errors) == 1 and said in errors[0]), \
        r.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_nodes_above_one_or_a_resume_of_a_multinode_run_go_over_ssh(make_job, tmp_path):
    job = str(make_job())
    assert not is_multinode(job, {})
    assert is_multinode(job, {"nodes": 2})
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    assert not is_multinode(None, {}, str(run_dir))
    nodes.write_plan(run_dir, ["a", "b"], ["10.0.0.1", "10.0.0.2"], [], True)
    assert is_multinode(None, {}, str(run_dir))
