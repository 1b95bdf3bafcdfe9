"""A catalogue of bad input through the real CLI (with tests/launcher/cli/test_bad_input.py):
job files, flags, data folders, images, checkpoints, hccn.conf, rank tables, device ids, ports,
nodes and cards, launcher tools, run directories. Each case: exit status 2, no traceback, stderr
names the culprit and the fix, and nothing is started or written. Only the three checkpoint
cases and the resume cases the worker reports import MindSpore (`packrun check` builds the
network: the e2e tier, through the real command); the rest are refused before anything starts,
and run the CLI's entry in the test's process (tests/helpers.packrun_in_process)."""

import json
import os
import socket
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from launcher.core.rundir.job_json import spec_to_json
from launcher.core.spec import load_job
from tests.helpers import packrun, packrun_in_process, resnet18_ckpt, small_job

PY_BIN = str(Path(sys.executable).parent)  # a PATH with python (and packrun's deps), no mpirun
ASCEND_RT = ["--device=Ascend", "--launcher=rank_table", "--cards_per_node=2"]
RANK_TABLE = ["rank-table", "--server_ip=10.0.0.1", "--out={t}/rank_table.json"]


class Case(NamedTuple):
    args: list[str]            # after `packrun`; {t} tmp dir, {d} data, {job}, {port}, {ckpt}
    expect: list[str]          # fragments of stderr: the culprit and the fix
    setup: Callable[[Path, Path], None] | None = None
    path: str | None = None    # PATH for the command (default: the test's)
    worker: bool = False       # the worker reports it: on the console (stdout) and its log


def write(name: str, text: str):
    return lambda t, d: (t / name).write_text(text)


def debug_run_dir(t: Path, d: Path, **changes) -> Path:
    """A debug run's directory (job.json only) at {t}/debugrun; `changes` edit its spec."""
    run_dir = t / "debugrun"
    run_dir.mkdir()
    doc = json.loads(spec_to_json(load_job(t / "job.toml")))
    doc["spec"].update(changes)
    (run_dir / "job.json").write_text(json.dumps(doc))
    return run_dir


def data_moved(t: Path, d: Path):
    debug_run_dir(t, d, train_dir=str(t / "moved" / "train"))


def truncated_last_ckpt(t: Path, d: Path):
    (debug_run_dir(t, d) / "last.ckpt").write_bytes(b"\x0a\x05trunc")


def last_ckpt_of_another_arch(t: Path, d: Path):
    import mindspore as ms

    from src.model.resnet import resnet18
    run_dir = debug_run_dir(t, d, arch="resnet34")  # job.json edited after the run started
    ms.save_checkpoint(resnet18(2), str(run_dir / "last.ckpt"), append_dict={"epoch": 1})


def data_entries(t: Path, d: Path):
    """A class folder holding what is not a sample; the run must still be refused for the
    batch size (the case's point), and the entries are reported, not read."""
    c = d / "train" / "digit_0"
    os.mkfifo(c / "pipe.jpg")
    (c / "folder.jpg").mkdir()
    (c / "dangling.jpg").symlink_to(t / "nowhere.jpg")


def launch_run_dir(t: Path, d: Path):
    """A run directory rendered for msrun (job.json + msrun.sh), as `packrun run` leaves it."""
    run_dir = t / "rendered"
    run_dir.mkdir()
    (run_dir / "job.json").write_text(spec_to_json(load_job(t / "job.toml")))
    (run_dir / "msrun.sh").write_text("#!/bin/bash\n")


CASES = {
    # --- job files -----------------------------------------------------------------------------
    "job file is a directory": Case(
        ["debug", "{t}"], ["job file {t} not found (it is a directory)", "pass a .toml file"]),
    "TOML syntax error": Case(
        ["check", "{t}/broken.toml"], ["{t}/broken.toml: not valid TOML", "(at line 2"],
        write("broken.toml", 'name = "x"\nepochs = = 3\n')),
    "TOML table": Case(
        ["debug", "{t}/table.toml"],
        ["{t}/table.toml: [train] is a table", "write e.g. `epochs = 5` at the top level"],
        write("table.toml", "[train]\nepochs = 3\n")),
    # --- flags ---------------------------------------------------------------------------------
    "integer flag given a word": Case(
        ["debug", "{job}", "--epochs=two"],
        ["command line: key 'epochs' must be an integer, got str 'two'"]),
    "number flag given a word": Case(
        ["run", "{job}", "--lr=fast"], ["command line: key 'lr' must be a number, got str 'fast'"]),
    "bool flag given a word": Case(
        ["check", "{job}", "--hflip=maybe"],
        ["command line: key 'hflip' must be true or false, got str 'maybe'"]),
    "check flag given a word": Case(
        ["check", "{job}", "--all_images=maybe"],
        ["--all_images='maybe'", "give --all_images (on) or --all_images=false"]),
    "unknown launcher": Case(
        ["run", "{job}", "--launcher=slurm"],
        ["key 'launcher' is 'slurm'", "choose one of 'msrun', 'rank_table', 'mpirun'"]),
    "integer flag given a superscript digit": Case(
        ["debug", "{job}", "--epochs=²"],
        ["command line: key 'epochs' must be an integer, got str '²'"]),
    "integer flag given a double dash": Case(
        ["run", "{job}", "--epochs=--5"],
        ["command line: key 'epochs' must be an integer, got str '--5'"]),
    "number flag given 400 digits": Case(
        ["debug", "{job}", "--lr=" + "1" * 400],
        ["command line: key 'lr' must be a finite number, got '1111111111111111111...",
         "(400 characters)"]),
    "seed beyond 64 bits": Case(
        ["check", "{job}", "--quick", "--seed=" + "9" * 30],
        ["key 'seed' is 999999999999999999999999999999, out of range (a 64-bit integer)"]),
    "slurm time limit": Case(
        ["check", "{job}", "--quick", "--slurm", "--time=2h"],
        ["key 'time' is '2h'", "Slurm takes MM, MM:SS, HH:MM:SS"]),
    # --- shell injection: refused at validation, naming the key, the character and the rule --
    "name with a newline": Case(
        ["run", "{job}", "--name=x\ntouch {t}/PWNED\n#"],
        ["key 'name': 'x\\ntouch", "holds a newline; give one line of printable text"]),
    "master_addr with a command": Case(
        ["render", "{job}", "--nodes=2", "--master_port=8118", "--master_addr=$(touch {t}/PWNED)"],
        ["key 'master_addr' is '$(touch", "the character '$' is not allowed",
         "a host name (letters, digits, '.', '_', '-') or an IPv4/IPv6 address"]),
    "hosts with a backtick": Case(
        ["render", "{job}", "--nodes=2", "--master_port=8118", "--hosts=a,`touch {t}/PWNED`"],
        ["key 'hosts' is 'a,`touch", "the character '`' is not allowed"]),
    "partition with a quote": Case(
        ["submit", "{job}", "--partition=gpu'"],
        ["key 'partition' is \"gpu'\": the character \"'\" is not allowed",
         "Slurm names, comma-separated"]),
    "env value with a control character": Case(
        ["render", "{job}", "--env={{X: 'a\tb'}}"],
        ["key 'env': 'a\\tb' holds the control character '\\t'"]),
    "name starting with a dash": Case(
        ["render", "{job}", "--name=-rf"],
        ["key 'name' is '-rf'", "not starting with '.' or '-'"]),
    # --- hostlists, as Slurm reads them ---------------------------------------------------------
    "a million hosts": Case(
        ["render", "{job}", "--nodes=2", "--master_port=8118", "--hosts=n[1-1000000]"],
        ["hostlist 'n[1-1000000]' names 1000000 hosts; Slurm takes at most 65536"]),
    "text after the last bracket": Case(
        ["render", "{job}", "--nodes=2", "--master_port=8118", "--hosts=n[1-2]x"],
        ["'x' after the last ']'; Slurm rejects text after a bracket"]),
    # --- job files ------------------------------------------------------------------------------
    "job file with a byte-order mark": Case(
        ["check", "{t}/bom.toml"],
        ["{t}/bom.toml: starts with a UTF-8 byte-order mark (BOM)", "save it as UTF-8 without"],
        lambda t, d: (t / "bom.toml").write_bytes(b"\xef\xbb\xbf" + (t / "job.toml").read_bytes())),
    # --- devices and output -----------------------------------------------------------------------
    "debug on a GPU this machine lacks": Case(
        ["debug", "{job}", "--device=GPU"],
        ["device = 'GPU' but this machine has no GPU cards", "or set device = \"CPU\""]),
    "run on Ascend cards this machine lacks": Case(
        ["run", "{job}", "--device=Ascend"],
        ["device = 'Ascend' but this machine has no Ascend cards"]),
    "debug into an unwritable output_dir": Case(
        ["debug", "{job}", "--output_dir=/proc/packrun-test-runs"],
        ["output_dir /proc/packrun-test-runs: cannot write in /proc", "writable directory"]),
    "output_dir inside train_dir": Case(
        ["debug", "{job}", "--output_dir={d}/train/runs"],
        ["output_dir {d}/train/runs is inside train_dir {d}/train",
         "set output_dir to a folder outside it"]),
    "--out inside val_dir": Case(
        ["render", "{job}", "--out={d}/val"],
        ["--out {d}/val is inside val_dir {d}/val"]),
    "hccn_conf under a file": Case(  # (a missing file only warns in render, check --quick)
        ["run", "{job}", *ASCEND_RT, "--hccn_conf={t}/job.toml/hccn.conf"],
        ["hccn.conf {t}/job.toml/hccn.conf not found: {t}/job.toml is a file, not a folder"]),
    # --- data and images -----------------------------------------------------------------------
    "batch_size larger than the split": Case(
        ["check", "{job}", "--quick", "--batch_size=49"],
        [("batch_size 49 is larger than the training split (48 images in {d}/train: 48 per "
          "worker)"), "Set batch_size <= 48"], data_entries),
    "batch_size larger than a worker's shard": Case(
        ["run", "{job}", "--workers=2", "--batch_size=25"],
        [("batch_size 25 is larger than the training split (48 images in {d}/train / 2 workers: "
          "24 per worker)"), "or use fewer workers"]),
    "debug with a batch larger than the split": Case(
        ["debug", "{job}", "--batch_size=100"], ["batch_size 100 is larger than the training"]),
    "empty train dir": Case(
        ["check", "{job}", "--quick", "--train_dir={t}/empty"],
        ["train_dir {t}/empty has no class sub-folders", "expected {t}/empty/<class>/<image>"],
        lambda t, d: (t / "empty").mkdir()),
    "text file named .jpg": Case(
        ["debug", "{job}"],
        ["image {d}/train/digit_0/notes.jpg cannot be decoded", "replace or delete it"],
        lambda t, d: (d / "train" / "digit_0" / "notes.jpg").write_text("shopping list")),
    # --- checkpoints (these build the network) -------------------------------------------------
    "checkpoint of another arch": Case(
        ["check", "{job}", "--arch=resnet34", "--pretrained={ckpt}"],
        ["checkpoint {ckpt} lacks 80 backbone parameter(s) of the network (arch = 'resnet34')",
         "Use a checkpoint of the same arch"]),
    "checkpoint that is not one": Case(
        ["check", "{job}", "--pretrained={t}/notes.ckpt"],
        ["checkpoint {t}/notes.ckpt cannot be read", "Set `pretrained` to another file"],
        write("notes.ckpt", "not a checkpoint")),
    "head that is not a cell": Case(
        ["check", "{job}", "--head=fc"],
        ["job key 'head' is 'fc', which is not a cell", "its classifier cells are: end_point"]),
    # --- hccn.conf and rank tables -------------------------------------------------------------
    "hccn.conf missing": Case(  # (render, check --quick only warn: test_artifacts_without_data)
        ["run", "{job}", *ASCEND_RT, "--hccn_conf={t}/nowhere.conf"],
        ["hccn.conf {t}/nowhere.conf not found", "point hccn_conf (--hccn_conf) at the file"]),
    "hccn.conf lacks a device": Case(
        ["check", "{job}", "--quick", *ASCEND_RT, "--hccn_conf={t}/hccn.conf"],
        ["{t}/hccn.conf has no address for device 1 (no address_1=IP line)",
         "configure it with hccn_tool or give the device IPs"],
        write("hccn.conf", "address_0=192.168.100.101\nnetmask_0=255.255.255.0\n")),
    "hccn.conf bad address": Case(
        [*RANK_TABLE, "--devices=0,1", "--hccn_conf={t}/hccn.conf"],
        ["{t}/hccn.conf line 2 (address_1): '192.168.100.300' is not an IPv4 address",
         "four numbers 0-255"],
        write("hccn.conf", "address_0=192.168.100.101\naddress_1=192.168.100.300\n")),
    "device_ips too few": Case(
        ["check", "{job}", "--quick", *ASCEND_RT, "--device_ips=192.168.100.101"],
        ["key 'device_ips' has 1 address(es); 1 node(s) x 2 card(s) need 2"]),
    "rank table duplicate device": Case(
        [*RANK_TABLE, "--devices=0,1,1", "--device_ips=10.1.0.1,10.1.0.2,10.1.0.3"],
        ["--devices: device 1 is listed twice"]),
    "rank table bad server ip": Case(
        ["rank-table", "--server_ip=10.0.0.256", "--devices=0", "--device_ips=10.1.0.1",
         "--out={t}/rank_table.json"],
        ["server ip: '10.0.0.256' is not an IPv4 address", "e.g. 192.168.100.101"]),
    "rank table device ip twice": Case(
        [*RANK_TABLE, "--devices=0,1", "--device_ips=10.1.0.1,10.1.0.1"],
        ["device ip 10.1.0.1 is used twice", "every device has its own address"]),
    "merge a table of another version": Case(
        ["merge-rank-tables", "{t}/old.json", "--out={t}/merged.json"],
        ["{t}/old.json: version \"2.0\" is the rank table of Ascend 950",
         "give a version \"1.0\" table (AI Server mode) or \"1.2\" (Atlas A3 super pods)"],
        write("old.json", json.dumps({"version": "2.0", "server_list": []}))),
    "rank_table launcher on CPU": Case(
        ["check", "{job}", "--quick", "--launcher=rank_table"],
        ["launcher 'rank_table' starts Ascend cards", "Use launcher = \"msrun\" or \"mpirun\""]),
    # --- device ids, ports, nodes and cards ----------------------------------------------------
    "device id out of range": Case(
        ["debug", "{job}", "--device_id=16"], ["key 'device_id' is 16; it must be <= 15"]),
    "rank table device out of range": Case(
        [*RANK_TABLE, "--devices=0-16"],
        ["--devices: device 16 is out of range; Ascend device ids are 0..15"]),
    "busy port": Case(
        ["check", "{job}", "--quick", "--master_port={port}"],
        ["master_port {port} is already in use", "master_port = 0 to pick a free one"]),
    "zero cards": Case(
        ["run", "{job}", "--cards_per_node=0"], ["key 'cards_per_node' is 0; it must be >= 1"]),
    "two nodes for packrun run without hosts": Case(
        ["run", "{job}", "--nodes=2"],
        ["nodes = 2: give the hosts to start them on", "--hosts=a,b", "packrun submit"]),
    "two nodes without a port": Case(
        ["check", "{job}", "--quick", "--nodes=2", "--hosts=10.0.0.[1-2]"],
        ["master_port = 0 picks a free port", "set master_port to a port free on node 0"]),
    "more hosts than nodes": Case(
        ["render", "{job}", "--nodes=2", "--hosts=a,b,c", "--master_port=8118"],
        ["key 'hosts' names 3 node(s) but nodes = 2", "give one host per node"]),
    "mpirun over nodes without hosts": Case(
        ["render", "{job}", "--launcher=mpirun", "--nodes=2"],
        ["nodes = 2 with launcher 'mpirun': set hosts"]),
    "--slurm with mpirun": Case(
        ["check", "{job}", "--quick", "--slurm", "--launcher=mpirun"],
        ["--slurm starts msrun on every node (srun); launcher is 'mpirun'",
         "Use --launcher=msrun"]),
    # --- launcher tools and output -------------------------------------------------------------
    "mpirun not installed": Case(
        ["run", "{job}", "--launcher=mpirun", "--workers=2"],
        ["mpirun not found on PATH", "install Open MPI (apt-get install openmpi-bin)"],
        path=PY_BIN),
    "output_dir is a file": Case(
        ["run", "{job}", "--output_dir={t}/job.toml"],
        ["output_dir {t}/job.toml: {t}/job.toml is a file", "set output_dir to a directory"]),
    # --- resume --------------------------------------------------------------------------------
    "resume with flags": Case(
        ["debug", "--resume={t}", "--epochs=3"],
        ["--resume RUN_DIR continues that directory's job as it was",
         "give no job file or other flags with it"]),
    "debug resume of a launch": Case(
        ["debug", "--resume={t}/rendered"],
        ["{t}/rendered holds msrun.sh", "use packrun run --resume {t}/rendered"],
        launch_run_dir),
    "resume of a folder that is no run": Case(
        ["run", "--resume={d}"], ["{d}/job.json not found: is this a packrun run directory?"]),
    "resume after the data moved": Case(
        ["debug", "--resume={t}/debugrun/job.json"],
        ["{t}/debugrun/job.json: train_dir {t}/moved/train is gone (the data moved?)",
         "put the data back there"], data_moved),
    "resume of a file that is no job.json": Case(
        ["debug", "--resume={t}/job.toml"],
        ["--resume {t}/job.toml: a file; give the run directory"]),
    "resume of a truncated last.ckpt": Case(
        ["debug", "--resume={t}/debugrun"],
        ["checkpoint {t}/debugrun/last.ckpt cannot be read",
         "delete it to start this run again from epoch 1"], truncated_last_ckpt, worker=True),
    "resume after job.json was edited to another arch": Case(
        ["debug", "--resume={t}/debugrun"],
        ["{t}/debugrun/last.ckpt does not fit the job in {t}/debugrun/job.json",
         "job.json was changed after the run started", "Restore job.json, or start a new run"],
        last_ckpt_of_another_arch, worker=True),
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A resnet18 checkpoint with a 2-class head, for the cases that name {ckpt}."""
    return resnet18_ckpt(tmp_path_factory.mktemp("ckpt") / "resnet18.ckpt")


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        yield s.getsockname()[1]


# The cases whose command builds the network or starts the worker (MindSpore, seconds each) are
# in the e2e tier; the rest are unit.
NETWORK_CASES = {"checkpoint of another arch", "checkpoint that is not one",
                 "head that is not a cell"}


def tier(name: str):
    return pytest.mark.e2e if name in NETWORK_CASES or CASES[name].worker else pytest.mark.unit


@pytest.mark.parametrize("name", [pytest.param(name, id=name, marks=tier(name)) for name in CASES])
def test_bad_input_names_the_culprit_and_the_fix(name, tmp_path, data, busy_port, request):
    case = CASES[name]
    job = small_job(tmp_path, data, "bad")
    if case.setup:
        case.setup(tmp_path, data)
    places = dict(t=tmp_path, d=data, job=job, port=busy_port)
    if "{ckpt}" in " ".join(case.args):
        places["ckpt"] = request.getfixturevalue("ckpt")
    env = os.environ | ({"PATH": case.path} if case.path else {})
    argv = [a.format(**places) for a in case.args]
    if name not in NETWORK_CASES and not case.worker:  # refused before anything starts
        r = packrun_in_process(*argv, env=env)
    else:                               # a worker or the network: the real command
        r = packrun(*argv, env=env, timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr
    said = r.stdout + r.stderr if case.worker else r.stderr
    for fragment in case.expect:
        assert fragment.format(**places) in said, said
    assert not any((tmp_path / "runs").glob("*")), "a run directory was created"
    assert not (tmp_path / "PWNED").exists(), "a job value ran as a command"
    assert not list(data.rglob("*-2026*")) and not (data / "train" / "runs").exists()
    assert not (tmp_path / "rank_table.json").exists()
