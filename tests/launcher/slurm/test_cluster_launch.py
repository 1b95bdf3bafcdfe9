"""Cluster launches as an Ascend/GPU engineer runs them, proven with stub workers and launchers
on PATH that record env, argv, cwd and affinity: a dead rank stops its peers in rank_table.sh,
core binding in every launch mode, existing rank tables, card subsets, per-rank directories,
HCCL's execution timeout, Slurm resources, a loopback master."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.core.errors import UserError
from launcher.core.spec import load_job
from launcher.render.artifacts import render_artifacts, write_run_dir
from tests.helpers import need_tool, stub_repo

pytestmark = pytest.mark.unit

ASCEND8 = dict(device="Ascend", cards_per_node=8)
# Scripts started here, a machine without NPUs: their node checks would (rightly) stop them.
# The checks themselves: tests/launcher/preflight/test_node.py, with stub npu-smi / hccn_tool.
NO_NPU = dict(node_checks="off")
DEVICE_IPS_2X8 = ",".join(f"192.168.{n}.{101 + i}" for n in (1, 2) for i in range(8))
RUN_DIR = "/runs/demo-20250101-000000"

# Records what the launch gave it, then fails (rank FAIL_RANK, after a moment) or waits.
STUB_WORKER = """import json, os, sys, time
rec = {k: os.environ.get(k) for k in ("RANK_ID", "DEVICE_ID", "RANK_SIZE", "RANK_TABLE_FILE",
       "ASCEND_PROCESS_LOG_PATH", "HCCL_EXEC_TIMEOUT", "STUB_TASKSET_CORES",
       "ASCEND_RT_VISIBLE_DEVICES")}
rec.update(pid=os.getpid(), cwd=os.getcwd(), argv=sys.argv,
           affinity=sorted(os.sched_getaffinity(0)))
out = os.path.join(os.environ["STUB_RECORDS"], "rank_%s.json" % os.environ["RANK_ID"])
with open(out, "w") as f:
    json.dump(rec, f)
if os.environ["RANK_ID"] == os.environ.get("FAIL_RANK"):
    time.sleep(1.0)
    sys.exit(3)
time.sleep(600)
"""
# taskset as a 192-core machine would run it: record the cores, run the command.
STUB_TASKSET = """#!/bin/bash
[ "$1" = -c ] || { echo "stub taskset: expected -c LIST" >&2; exit 64; }
export STUB_TASKSET_CORES="$2"
shift 2
exec "$@"
"""


def stub_bin(tmp_path: Path, **tools: str) -> Path:
    d = tmp_path / "stubbin"
    d.mkdir(exist_ok=True)
    for name, text in tools.items():
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    return d


def records(folder: Path) -> dict[int, dict]:
    return {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in folder.glob("*.json")}


# --- rank_table.sh: a dead rank stops its peers -------------------------------------------------

def test_a_dead_rank_stops_its_peers_and_each_rank_has_its_cores_and_directory(make_job,
                                                                               tmp_path):
    repo = stub_repo(tmp_path, STUB_WORKER)
    bin_dir = stub_bin(tmp_path, taskset=STUB_TASKSET)
    spec = load_job(make_job(**ASCEND8, **NO_NPU, launcher="rank_table", nodes=2,
                             hosts="10.0.0.[1-2]", device_ips=DEVICE_IPS_2X8))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=repo)
    rec = tmp_path / "records"
    rec.mkdir()
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PACKRUN_CORES": "0-191",
                        "STUB_RECORDS": str(rec), "FAIL_RANK": "11"}
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(run_dir / "rank_table.sh"), "1"], capture_output=True,
                         text=True, timeout=120, env=env)
    elapsed = time.monotonic() - t0
    assert res.returncode == 3, res.stdout + res.stderr
    assert (f"rank 11 exited with status 3; log: {run_dir}/logs/worker_11.log"
            in res.stderr), res.stderr
    got = records(rec)
    assert sorted(got) == list(range(8, 16))
    alive = [r for r, g in got.items() if psutil.pid_exists(g["pid"])
             and psutil.Process(g["pid"]).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"ranks {alive} still run after the script ended"
    assert elapsed < 60, f"the peers took {elapsed:.0f} s to stop"
    cores = {r: g["STUB_TASKSET_CORES"] for r, g in got.items()}
    assert cores == {8 + i: f"{24 * i}-{24 * i + 23}" for i in range(8)}  # 192 // 8, distinct
    assert {r: g["cwd"] for r, g in got.items()} == {r: str(run_dir / "ranks" / str(r))
                                                      for r in got}
    assert {r: g["DEVICE_ID"] for r, g in got.items()} == {8 + i: str(i) for i in range(8)}
    for r, g in got.items():
        assert g["ASCEND_PROCESS_LOG_PATH"] == str(run_dir / "logs" / "ascend" / f"rank_{r}")
        assert g["HCCL_EXEC_TIMEOUT"] == "1836" and g["RANK_SIZE"] == "16"
    for r in range(8, 16):
        assert f"packrun: rank {r} on device {r - 8}, cores {cores[r]}" in res.stdout


def test_the_real_taskset_binds_each_rank_to_its_own_core(make_job, tmp_path):
    """On this machine, for real: 2 ranks on the process's own cores, one core each."""
    need_tool("taskset", "to start the rank table script on two cores")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores to bind 2 ranks to one core each")
    repo = stub_repo(tmp_path, STUB_WORKER.replace("time.sleep(600)", "pass"))
    spec = load_job(make_job(device="Ascend", cards_per_node=2, launcher="rank_table", **NO_NPU,
                             hosts="10.0.0.1", device_ips="192.168.1.1,192.168.1.2"))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=repo)
    rec = tmp_path / "records"
    rec.mkdir()
    env = os.environ | {"STUB_RECORDS": str(rec), "PACKRUN_CORES": ""}
    res = subprocess.run(["taskset", "-c", "0,1", "bash", str(run_dir / "rank_table.sh")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    got = records(rec)
    assert [got[0]["affinity"], got[1]["affinity"]] == [[0], [1]]


def test_the_script_stops_every_rank_on_sigterm(make_job, tmp_path):
    repo = stub_repo(tmp_path, STUB_WORKER)
    spec = load_job(make_job(device="Ascend", cards_per_node=2, launcher="rank_table", **NO_NPU,
                             hosts="10.0.0.1", device_ips="192.168.1.1,192.168.1.2",
                             bind_cores=False))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=repo)
    rec = tmp_path / "records"
    rec.mkdir()
    proc = subprocess.Popen(["bash", str(run_dir / "rank_table.sh")], env=os.environ | {
        "STUB_RECORDS": str(rec)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(rec.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.terminate()
    assert proc.wait(timeout=60) == 143
    for g in records(rec).values():
        assert not psutil.pid_exists(g["pid"]) or \
            psutil.Process(g["pid"]).status() == psutil.STATUS_ZOMBIE


# --- msrun.sh and mpirun.sh with stub launchers -----------------------------------------------

def stub_python(tmp_path: Path) -> Path:
    """An interpreter that records msrun's argv instead of starting it (everything else, e.g.
    the core split, runs for real)."""
    path = tmp_path / "stubpython"
    path.write_text(f"""#!/bin/bash
if [ "$1 $2" = "-m mindspore.parallel.cluster.run" ]; then
    printf '%s\\n' "$@" > "$STUB_RECORDS/msrun.argv"
    exit 0
fi
exec {sys.executable} "$@"
""")
    path.chmod(0o755)
    return path


MESSY_TABLE = ('{"version": "1.0",\r\n "server_count": "1", "server_list": [{"server_id": '
               '"10.0.0.1", "device": [' + ", ".join(
                   f'{{"device_id": "{4 + i}", "device_ip": "192.168.1.{11 + i}", '
                   f'"rank_id": "{i}"}}' for i in range(4)) +
               '], "host_nic_ip": "reserve"}], "status": "completed"}\r\n')


def test_msrun_gets_the_bind_flag_and_the_existing_rank_table_byte_for_byte(make_job, tmp_path):
    table = tmp_path / "hccl_4p_4567_10.0.0.1.json"
    table.write_bytes(MESSY_TABLE.encode())
    spec = load_job(make_job(device="Ascend", cards_per_node=4, rank_table_file=str(table),
                             **NO_NPU))
    run_dir, _ = write_run_dir(spec, python=str(stub_python(tmp_path)))
    assert (run_dir / "rank_table.json").read_bytes() == table.read_bytes()
    rec = tmp_path / "records"
    rec.mkdir()
    res = subprocess.run(["bash", str(run_dir / "msrun.sh")], capture_output=True, text=True,
                         timeout=120, env=os.environ | {"STUB_RECORDS": str(rec),
                                                        "PACKRUN_CORES": "0-191"})
    assert res.returncode == 0, res.stderr
    argv = (rec / "msrun.argv").read_text().splitlines()
    assert f"--rank_table_file={run_dir}/rank_table.json" in argv
    assert "cores of local ranks 0..3: 0-47 48-95 96-143 144-191" in res.stdout
    bind = [a for a in argv if a.startswith("--bind_core=")]
    if bind:  # msrun binds (cgroup v1's cpuset readable here): the table's cards 4-7 as keys
        assert json.loads(bind[0].split("=", 1)[1]) == {
            "device4": ["0-47"], "device5": ["48-95"], "device6": ["96-143"],
            "device7": ["144-191"]} or "0-191" not in Path("/sys/fs/cgroup/cpuset/cpuset.cpus"
                                                             ).read_text()
    script = (run_dir / "msrun.sh").read_text()
    assert "export ASCEND_RT_VISIBLE_DEVICES=4,5,6,7\n" in script  # the table's cards
    assert '${MSRUN_BIND:+"--bind_core=$MSRUN_BIND"}' in script


def test_msrun_bind_core_on_this_machine(make_job, tmp_path):
    if not Path("/sys/fs/cgroup/cpuset/cpuset.cpus").is_file() or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("msrun binds only where cgroup v1's cpuset is readable, on 2+ cores")
    need_tool("taskset", "to start the msrun script on two cores")
    run_dir, _ = write_run_dir(load_job(make_job(cards_per_node=2)),
                               python=str(stub_python(tmp_path)))
    rec = tmp_path / "records"
    rec.mkdir()
    res = subprocess.run(["taskset", "-c", "0,1", "bash", str(run_dir / "msrun.sh")],
                         capture_output=True, text=True, timeout=120,
                         env=os.environ | {"STUB_RECORDS": str(rec)})
    assert res.returncode == 0, res.stderr
    argv = (rec / "msrun.argv").read_text().splitlines()
    assert '--bind_core={"device0":["0"],"device1":["1"]}' in argv


def test_the_shim_binds_where_msrun_cannot(make_job, tmp_path):
    run_dir, _ = write_run_dir(load_job(make_job(cards_per_node=2)))
    probe = ["-c", "import os; print(os.getcwd(), sorted(os.sched_getaffinity(0)))"]
    env = os.environ | {"MS_ROLE": "MS_WORKER", "RANK_ID": "1", "DEVICE_ID": "1",
                        "PACKRUN_RANK_CORES": "0 1"}
    res = subprocess.run([str(run_dir / "bin" / "python"), *probe], capture_output=True,
                         text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    want = [1] if 1 in os.sched_getaffinity(0) else None
    cwd, cores = res.stdout.split(" ", 1)
    assert cwd == str(run_dir / "ranks" / "1")
    if want:
        assert json.loads(cores) == want
    sched = subprocess.run([str(run_dir / "bin" / "python"), *probe], capture_output=True,
                           text=True, timeout=60, env=env | {"MS_ROLE": "MS_SCHED"})
    assert sched.stdout.split(" ", 1)[0] == os.getcwd()  # the scheduler is no rank


def test_mpirun_binds_with_open_mpi(make_job, tmp_path):
    bin_dir = stub_bin(tmp_path, mpirun='#!/bin/bash\nprintf "%s\\n" "$@" > '
                       '"$STUB_RECORDS/mpirun.argv"\n')
    run_dir, _ = write_run_dir(load_job(make_job(device="GPU", cards_per_node=8,
                                                 launcher="mpirun", devices="0-7")))
    rec = tmp_path / "records"
    rec.mkdir()
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_RECORDS": str(rec),
                        "PACKRUN_CORES": "0-191"}
    res = subprocess.run(["bash", str(run_dir / "mpirun.sh")], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    argv = (rec / "mpirun.argv").read_text().splitlines()
    i = argv.index("--map-by")
    assert argv[i:i + 5] == ["--map-by", "slot:PE=24", "--bind-to", "hwthread",
                             "--use-hwthread-cpus"]
    assert "CUDA_VISIBLE_DEVICES" in argv and argv[-1] == f"{run_dir}/mpi_task.sh"
    off = render_artifacts(load_job(make_job(launcher="mpirun", cards_per_node=2,
                                             bind_cores=False)), RUN_DIR)["mpirun.sh"]
    assert "BIND=(--bind-to none)" in off and "launcher.core.cores" not in off


def test_bind_cores_false_renders_no_binding(make_job):
    for launcher, extra in [("msrun", {}), ("rank_table", dict(hosts="10.0.0.1",
                                                               device_ips="192.168.1.1"))]:
        art = render_artifacts(load_job(make_job(device="Ascend", launcher=launcher,
                                                 bind_cores=False, **extra)), RUN_DIR)
        script = art[f"{launcher}.sh"]
        assert "launcher.core.cores" not in script and "taskset -c" not in script


# --- existing rank tables ---------------------------------------------------------------------

def table_2x8():
    return {"version": "1.0", "server_count": "2", "status": "completed", "server_list": [
        {"server_id": f"10.0.0.{s + 1}", "host_nic_ip": "reserve", "device": [
            {"device_id": str(d), "device_ip": f"192.168.{s}.{d}", "rank_id": str(8 * s + d)}
            for d in range(8)]} for s in range(2)]}


def broken(change):
    t = table_2x8()
    change(t)
    return t


@pytest.mark.parametrize("table, message", [
    (broken(lambda t: t.update(version="2.0")), 'version "2.0" is the rank table of Ascend 950'),
    (broken(lambda t: t.update(server_count="3")), "field 'server_count' is '3'"),
    (broken(lambda t: t["server_list"].pop() and t.update(server_count="1")),
     "1 server(s) in server_list, the job has nodes = 2"),
    (broken(lambda t: t["server_list"][1]["device"].pop()),
     "server 1 (10.0.0.2): field 'device' lists 7 device(s), the job has cards_per_node = 8"),
    (broken(lambda t: t["server_list"][1].update(server_id="n" * 65)),
     f"server 1 ({'n' * 65}): field 'server_id' has 65 characters; HCCL allows at most 64"),
    (broken(lambda t: t["server_list"][1].update(server_id="10.0.0.1")),
     "server 1 (10.0.0.1): field 'server_id' is listed twice"),
    (broken(lambda t: t["server_list"][0]["device"][3].update(device_id="2")),
     "server 0 (10.0.0.1): field 'device_id' 2 is listed twice"),
    (broken(lambda t: t["server_list"][0]["device"][3].update(device_ip="192.168.0.2")),
     ("server 0 (10.0.0.1): device 3: field 'device_ip' 192.168.0.2 is also server 10.0.0.1 "
      "device 2's")),
    (broken(lambda t: t["server_list"][1]["device"][0].update(rank_id="3")),
     "field 'rank_id': rank id 3 is used twice"),
    (broken(lambda t: t["server_list"][1]["device"][0].pop("rank_id")),
     "server 1 (10.0.0.2): device 0: field 'rank_id' is missing"),
])
def test_a_bad_rank_table_names_the_file_the_server_and_the_field(make_job, tmp_path, table,
                                                                  message):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table, indent=4))
    spec = load_job(make_job(**ASCEND8, launcher="rank_table", nodes=2, hosts="10.0.0.[1-2]",
                             rank_table_file=str(path)))
    with pytest.raises(UserError, match=re.escape(f"rank_table_file {path}: {message}")):
        render_artifacts(spec, RUN_DIR)


def test_the_master_server_comes_first(make_job, tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table_2x8()))
    spec = load_job(make_job(**ASCEND8, nodes=2, master_addr="10.0.0.2", master_port=8118,
                             rank_table_file=str(path)))
    with pytest.raises(UserError, match=re.escape("server 0: field 'server_id' is 10.0.0.1 but "
                                                  "master_addr is 10.0.0.2")):
        render_artifacts(spec, RUN_DIR)


def test_a_good_table_is_used_as_it_is(make_job, tmp_path):
    path = tmp_path / "table.json"
    text = json.dumps(table_2x8(), indent=2) + "\n"
    path.write_text(text)
    spec = load_job(make_job(**ASCEND8, launcher="rank_table", nodes=2, hosts="10.0.0.[1-2]",
                             rank_table_file=str(path)))
    art = render_artifacts(spec, RUN_DIR)
    assert art["rank_table.json"] == text
    assert "RANK_IDS=(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)" in art["rank_table.sh"]
    missing = make_job(**ASCEND8, rank_table_file=str(tmp_path / "none.json"))
    with pytest.raises(UserError, match=r"key 'rank_table_file'.* does not exist; give the rank "
                                        r"table file"):
        load_job(missing)


def test_a_server_finds_its_own_place_in_the_table(tmp_path):
    from launcher.render.ranktable import local_server_index
    table = {"server_list": [{"server_id": "192.0.2.1"}, {"server_id": "127.0.0.1"}]}
    assert local_server_index(table, "t.json") == 1
    with pytest.raises(UserError, match=r"none of its server ids .* is an address of this "
                                        r"machine"):
        local_server_index({"server_list": [{"server_id": "192.0.2.1"}]}, "t.json")


# --- card subsets -----------------------------------------------------------------------------

def test_devices_pick_the_cards_everywhere(make_job, hccn_conf):
    spec = load_job(make_job(device="Ascend", cards_per_node=4, devices="4-7",
                             launcher="rank_table", hosts="10.0.0.1", hccn_conf=str(hccn_conf)))
    art = render_artifacts(spec, RUN_DIR)
    table = json.loads(art["rank_table.json"])
    assert [(d["device_id"], d["device_ip"], d["rank_id"]) for d in
            table["server_list"][0]["device"]] == [
        (str(4 + i), f"192.168.100.{105 + i}", str(i)) for i in range(4)]
    assert "DEVICE_IDS=(4 5 6 7)" in art["rank_table.sh"]
    assert "VISIBLE_DEVICES" not in art["rank_table.sh"]  # DEVICE_ID is the physical card
    msrun = render_artifacts(load_job(make_job(device="GPU", cards_per_node=4,
                                               devices="0,2,4,6")), RUN_DIR)["msrun.sh"]
    assert "export CUDA_VISIBLE_DEVICES=0,2,4,6\n" in msrun


@pytest.mark.parametrize("keys, message", [
    (dict(device="Ascend", cards_per_node=8, devices="4-7"),
     "key 'devices' is '4-7': 4 card(s), but cards_per_node = 8"),
    (dict(device="Ascend", devices="7-4"), "key 'devices': range 7-4 runs backwards"),
    (dict(device="GPU", cards_per_node=2, devices="1,1"),
     "key 'devices': device 1 is listed twice"),
    (dict(devices="0"), "key 'devices' selects GPU/Ascend cards; device is 'CPU'"),
])
def test_bad_devices(make_job, keys, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_job(make_job(**keys))


# --- timeouts, Slurm resources ----------------------------------------------------------------

def test_hccl_exec_timeout_and_cluster_timeout_by_launch_kind(make_job):
    def script(slurm=False, **keys):
        art = render_artifacts(load_job(make_job(**keys)), RUN_DIR, slurm=slurm)
        return art.get("msrun.sh") or art.get("rank_table.sh") or art["mpirun.sh"]
    two = dict(nodes=2, hosts="10.0.0.[1-2]", master_port=8118)
    assert "--cluster_time_out=60 " in script()
    assert "--cluster_time_out=600 " in script(**two)           # started by hand on each node
    assert "--cluster_time_out=60 " in script(slurm=True, **two)  # srun starts them together
    assert "MS_TOPO_TIMEOUT=60\n" in script(launcher="mpirun", cards_per_node=2, **two)
    assert "--cluster_time_out=90 " in script(cluster_timeout=90, **two)
    ascend = script(device="Ascend", collective_timeout=3672, **two)
    assert "export HCCL_EXEC_TIMEOUT=3672\n" in ascend
    assert "export HCCL_CONNECT_TIMEOUT=600\n" in ascend
    assert "HCCL_EXEC_TIMEOUT" not in script(device="GPU")


def directives(sbatch: str) -> list[str]:
    return re.findall(r"^#SBATCH (.*)$", sbatch, re.M)


def test_gpu_and_ascend_jobs_ask_for_whole_nodes(make_job):
    def sbatch(sbatch_extra=(), **keys):
        spec = load_job(make_job(**keys), {"sbatch_extra": list(sbatch_extra)})
        return render_artifacts(spec, RUN_DIR, slurm=True)["job.sbatch"]
    gpu = sbatch(device="GPU", cards_per_node=8)
    assert {"--exclusive", "--mem=0", "--gres=gpu:8"} <= set(directives(gpu))
    assert not any(d.startswith("--cpus-per-task") for d in directives(gpu))
    assert "srun --kill-on-bad-exit=1 --nodes=1 --ntasks-per-node=1 \\" in gpu
    ascend = sbatch(device="Ascend", cards_per_node=8, gres="npu:8", cpus_per_task=96,
                    sbatch_extra=["--mem=500G"])
    d = directives(ascend)
    assert "--gres=npu:8" in d and "--cpus-per-task=96" in d and d[-1] == "--mem=500G"
    cpu = sbatch(cards_per_node=2)
    assert "--cpus-per-task=2" in directives(cpu) and "--exclusive" not in directives(cpu)


# --- a loopback master ------------------------------------------------------------------------

@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_a_loopback_master_is_refused_before_any_worker_starts(make_job, launcher):
    spec = load_job(make_job(nodes=2, hosts="127.0.1.1,10.0.0.2", master_port=8118,
                             launcher=launcher, cards_per_node=1))
    run_dir, _ = write_run_dir(spec)
    ranks = [0, 1] if launcher == "msrun" else [None]
    for rank in ranks:
        cmd = ["bash", str(run_dir / f"{launcher}.sh")] + ([str(rank)] if rank is not None else [])
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res.stdout + res.stderr
        assert ("master_addr '127.0.1.1' resolves to 127.0.1.1, a loopback address the other "
                "nodes cannot reach; set master_addr to node 0's network IP") in res.stderr
        assert res.stderr.count("\n") == 1
    assert list((run_dir / "logs").iterdir()) == []


def test_check_reports_cores_per_rank_and_the_rank_table_source(make_job, tmp_path):
    from launcher.preflight import checks as check
    spec = load_job(make_job(cards_per_node=1))
    (found,) = check.check_cores(spec, check.Options())
    assert found.level == check.OK and "core(s) per rank (rank 0: " in found.text
    too_many = load_job(make_job(cards_per_node=len(os.sched_getaffinity(0)) + 1))
    (found,) = check.check_cores(too_many, check.Options(here=True))  # debug, run: here, now
    assert found.level == check.ERROR and "local ranks but only" in found.text
    (found,) = check.check_cores(too_many, check.Options())  # a login node: the nodes' cores
    assert found.level == check.WARNING and "checked again where the job runs" in found.text
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table_2x8()))
    spec = load_job(make_job(**ASCEND8, launcher="rank_table", nodes=2, hosts="10.0.0.[1-2]",
                             rank_table_file=str(path)))
    texts = [f.text for f in check.check_launch(spec, check.Options())]
    assert any(t.startswith(f"rank_table_file {path}: 16 device(s) on 2 server(s), valid")
               for t in texts)


def test_rank_table_sh_without_an_index_finds_its_server_by_address(make_job, tmp_path):
    table = {"version": "1.0", "server_count": "2", "status": "completed", "server_list": [
        {"server_id": ip, "host_nic_ip": "reserve", "device": [
            {"device_id": "3", "device_ip": f"192.168.{s}.3", "rank_id": str(s)}]}
        for s, ip in enumerate(["192.0.2.1", "127.0.0.1"])]}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table, indent=4))
    repo = stub_repo(tmp_path, STUB_WORKER.replace("time.sleep(600)", "pass"))
    spec = load_job(make_job(device="Ascend", cards_per_node=1, nodes=2, launcher="rank_table",
                             **NO_NPU,
                             rank_table_file=str(path), bind_cores=False))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=repo)
    rec = tmp_path / "records"
    rec.mkdir()
    res = subprocess.run(["bash", str(run_dir / "rank_table.sh")], capture_output=True,
                         text=True, timeout=120, env=os.environ | {"STUB_RECORDS": str(rec)})
    assert res.returncode == 0, res.stderr
    got = records(rec)
    assert list(got) == [1] and got[1]["DEVICE_ID"] == "3"  # server 1 (127.0.0.1), its card
    assert (run_dir / "rank_table.json").read_text() == path.read_text()


def test_rank_table_file_through_env_points_to_the_key(make_job):
    with pytest.raises(UserError, match=re.escape("key 'env' sets RANK_TABLE_FILE; give the table "
                                                  "as rank_table_file = '/x/t.json' instead")):
        load_job(make_job(device="Ascend"), {"env": {"RANK_TABLE_FILE": "/x/t.json"}})
