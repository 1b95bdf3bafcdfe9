"""Ascend rank tables (launcher/render/ranktable.py) and `packrun rank-table`: the table
hccl_tools.py writes, from device lists and ranges, the device IPs from hccn.conf, hccn_tool or
given explicitly, merged tables renumbered in file order, and errors that name the culprit."""

import json
import os
import re
from pathlib import Path

import fire
import pytest

from launcher.cli.main import Commands
from launcher.core.devices import parse_devices
from launcher.core.errors import UserError
from launcher.render import ranktable
from launcher.render.ranktable import (
    build_rank_table,
    group_warning,
    merge_command,
    merge_rank_tables,
    rank_table_command,
    read_hccn_conf,
    to_json,
)
from tests.helpers import stub_tools_path

pytestmark = pytest.mark.unit

# What hccl_tools.py writes for `--device_num "[0,2)" --server_ip 10.0.0.1`, typed by hand.
EXPECTED_ONE_SERVER = """{
    "version": "1.0",
    "server_count": "1",
    "server_list": [
        {
            "server_id": "10.0.0.1",
            "device": [
                {
                    "device_id": "0",
                    "device_ip": "192.168.100.101",
                    "rank_id": "0"
                },
                {
                    "device_id": "1",
                    "device_ip": "192.168.100.102",
                    "rank_id": "1"
                }
            ],
            "host_nic_ip": "reserve"
        }
    ],
    "status": "completed"
}"""

HCCN_CONF = """# hccn.conf as hccn_tool writes it
address_0=192.168.100.101
netmask_0=255.255.255.0
address_1=192.168.100.102
netmask_1=255.255.255.0
address_4=192.168.100.105
"""


def cli(*args):
    return fire.Fire(Commands, command=list(args), name="packrun")


@pytest.fixture
def no_default_hccn(monkeypatch, tmp_path):
    """Pretend this machine has no /etc/hccn.conf (an Ascend machine running the tests has)."""
    monkeypatch.setattr(ranktable, "DEFAULT_HCCN_CONF", str(tmp_path / "no-hccn.conf"))


# --- device sets --------------------------------------------------------------------------------

@pytest.mark.parametrize("value, devices", [
    ("0-7", list(range(8))), ("0,1", [0, 1]), ("4-7", [4, 5, 6, 7]), ("0-3,6", [0, 1, 2, 3, 6]),
    ((0, 1), [0, 1]),            # fire's reading of --devices=0,1
    ([5, 4], [4, 5]), (3, [3]), ("6, 2", [2, 6]), ("8-15", list(range(8, 16))),
])
def test_parse_devices(value, devices):
    assert parse_devices(value) == devices


@pytest.mark.parametrize("value, message", [
    ("0,0", "device 0 is listed twice"), ("0-3,2", "device 2 is listed twice"),
    ((1, 1), "device 1 is listed twice"),
    ("16", "device 16 is out of range"), ("8-20", "device 16 is out of range"),
    ("", "'' is not a device id"), ("a", "'a' is not a device id"), ("-1", "is not a device id"),
    ("3-1", "range 3-1 runs backwards"), ((), "the device set is empty"),
])
def test_bad_device_sets(value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_devices(value)


@pytest.mark.parametrize("devices, warns", [
    ([3, 4], True), ([2, 3, 4, 5], True), ([0, 1], False), ([4, 5, 6, 7], False),
    ([6, 7], False), (list(range(8)), False), ([3], False), ([2, 3, 4], False),
])
def test_group_boundary_warning(devices, warns):
    assert (group_warning(devices) is not None) == warns


# --- building -----------------------------------------------------------------------------------

def test_one_server_exactly_as_hccl_tools_writes_it():
    table = build_rank_table([("10.0.0.1", [(0, "192.168.100.101"), (1, "192.168.100.102")])])
    assert to_json(table) == EXPECTED_ONE_SERVER
    assert list(table) == ["version", "server_count", "server_list", "status"]
    assert list(table["server_list"][0]) == ["server_id", "device", "host_nic_ip"]
    assert list(table["server_list"][0]["device"][0]) == ["device_id", "device_ip", "rank_id"]


def test_several_servers_number_ranks_in_the_order_given():
    table = build_rank_table([
        ("10.0.0.2", [(5, "192.168.2.6"), (4, "192.168.2.5")]),
        ("10.0.0.1", [(0, "192.168.1.1"), (1, "192.168.1.2")]),
    ])
    assert table["server_count"] == "2"
    got = [(s["server_id"], d["device_id"], d["rank_id"])
           for s in table["server_list"] for d in s["device"]]
    assert got == [("10.0.0.2", "4", "0"), ("10.0.0.2", "5", "1"),
                   ("10.0.0.1", "0", "2"), ("10.0.0.1", "1", "3")]
    values = [v for s in table["server_list"] for d in s["device"] for v in d.values()]
    assert all(isinstance(v, str) for v in values)


@pytest.mark.parametrize("servers, message", [
    ([("10.0.0", [(0, "192.168.1.1")])], "'10.0.0' is not an IPv4 address"),
    ([("10.0.0.1", [(0, "192.168.1.256")])], "'192.168.1.256' is not an IPv4 address"),
    ([("10.0.0.1", [(0, "192.168.1.1"), (1, "192.168.1.1")])],
     "device ip 192.168.1.1 is used twice"),
    ([("10.0.0.1", [(0, "192.168.1.1")]), ("10.0.0.2", [(0, "192.168.1.1")])],
     "device ip 192.168.1.1 is used twice (server 10.0.0.1 device 0 and server 10.0.0.2"),
    ([("10.0.0.1", [(0, "192.168.1.1")]), ("10.0.0.1", [(1, "192.168.1.2")])],
     "server 10.0.0.1 is listed twice"),
    ([("10.0.0.1", [(0, "192.168.1.1"), (0, "192.168.1.2")])], "device 0 is listed twice"),
    ([("10.0.0.1", [(16, "192.168.1.1")])], "device 16 is out of range"),
    ([("10.0.0.1", [])], "the device set is empty"),
    ([], "at least one server"),
])
def test_build_errors_name_the_culprit(servers, message):
    with pytest.raises(UserError, match=re.escape(message)):
        build_rank_table(servers)


# --- hccn.conf and hccn_tool --------------------------------------------------------------------

def test_read_hccn_conf(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text(HCCN_CONF)
    assert read_hccn_conf(conf) == {0: "192.168.100.101", 1: "192.168.100.102",
                                    4: "192.168.100.105"}


def test_hccn_conf_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match=re.escape(f"hccn.conf {tmp_path / 'x'} not found")):
        read_hccn_conf(tmp_path / "x")
    bad = tmp_path / "bad.conf"
    bad.write_text("address_0=192.168.100.101\naddress_1=192.168.100\n")
    with pytest.raises(UserError, match=re.escape(f"{bad} line 2 (address_1): '192.168.100' is "
                                                  "not an IPv4 address")):
        read_hccn_conf(bad)


def test_rank_table_from_hccn_conf(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text(HCCN_CONF)
    out = rank_table_command("0-1", "10.0.0.1", tmp_path / "t.json", hccn_conf=str(conf))
    assert out.read_text() == EXPECTED_ONE_SERVER


def test_hccn_conf_without_a_requested_device(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text(HCCN_CONF)
    with pytest.raises(UserError, match=re.escape(f"{conf} has no address for device 2")):
        rank_table_command("0-3", "10.0.0.1", tmp_path / "t.json", hccn_conf=str(conf))


def test_device_ips_from_hccn_tool(tmp_path, monkeypatch, no_default_hccn):
    tool = tmp_path / "bin" / "hccn_tool"
    tool.parent.mkdir()
    # hccn_tool -i N -ip -g prints "ipaddr:IP" and "netmask:MASK"
    tool.write_text('#!/bin/sh\necho "ipaddr:192.168.100.10$2"\necho "netmask:255.255.255.0"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    out = rank_table_command("4,6", "10.0.0.1", tmp_path / "t.json")
    devices = json.loads(out.read_text())["server_list"][0]["device"]
    assert [(d["device_id"], d["device_ip"]) for d in devices] == [
        ("4", "192.168.100.104"), ("6", "192.168.100.106")]


def test_no_source_of_device_ips(tmp_path, monkeypatch, no_default_hccn):
    monkeypatch.setenv("PATH", str(tmp_path))  # no hccn_tool
    with pytest.raises(UserError, match=r"no device IPs: .* hccn_tool is not on PATH"):
        rank_table_command("0-7", "10.0.0.1", tmp_path / "t.json")


# --- several servers and merging ----------------------------------------------------------------

def test_one_table_over_two_servers_from_explicit_ips(tmp_path):
    ips = "192.168.1.1,192.168.1.2,192.168.2.1,192.168.2.2"
    out = rank_table_command("0,1", "10.0.0.1,10.0.0.2", tmp_path / "t.json", device_ips=ips)
    table = json.loads(out.read_text())
    assert [(s["server_id"], [(d["device_ip"], d["rank_id"]) for d in s["device"]])
            for s in table["server_list"]] == [
        ("10.0.0.1", [("192.168.1.1", "0"), ("192.168.1.2", "1")]),
        ("10.0.0.2", [("192.168.2.1", "2"), ("192.168.2.2", "3")])]


def test_explicit_ips_must_cover_every_device(tmp_path):
    with pytest.raises(UserError, match=r"--device_ips has 3 address\(es\); 2 node.* need 4"):
        rank_table_command("0,1", "10.0.0.1,10.0.0.2", tmp_path / "t.json",
                           device_ips=("192.168.1.1", "192.168.1.2", "192.168.2.1"))


def test_hccn_conf_cannot_describe_two_servers(tmp_path):
    with pytest.raises(UserError, match=re.escape("an hccn.conf describes one server")):
        rank_table_command("0,1", "10.0.0.1,10.0.0.2", tmp_path / "t.json",
                           hccn_conf=str(tmp_path / "hccn.conf"))


def _write_table(path, server, ips):
    path.write_text(to_json(build_rank_table([(server, list(enumerate(ips)))])))
    return str(path)


def test_merge_renumbers_ranks_in_file_order(tmp_path):
    a = _write_table(tmp_path / "a.json", "10.0.0.1", ["192.168.1.1", "192.168.1.2"])
    b = _write_table(tmp_path / "b.json", "10.0.0.2", ["192.168.2.1", "192.168.2.2"])
    out = merge_command([b, a], tmp_path / "m.json")
    merged = json.loads(out.read_text())
    assert merged["server_count"] == "2"
    assert [(s["server_id"], [d["rank_id"] for d in s["device"]])
            for s in merged["server_list"]] == [("10.0.0.2", ["0", "1"]),
                                                ("10.0.0.1", ["2", "3"])]
    # the merged file is what one table over both servers would be
    direct = build_rank_table([("10.0.0.2", [(0, "192.168.2.1"), (1, "192.168.2.2")]),
                               ("10.0.0.1", [(0, "192.168.1.1"), (1, "192.168.1.2")])])
    assert out.read_text() == to_json(direct)


def test_merge_errors(tmp_path):
    a = _write_table(tmp_path / "a.json", "10.0.0.1", ["192.168.1.1"])
    same_ip = _write_table(tmp_path / "b.json", "10.0.0.2", ["192.168.1.1"])
    with pytest.raises(UserError, match=re.escape("device ip 192.168.1.1 is used twice")):
        merge_command([a, same_ip], tmp_path / "m.json")
    with pytest.raises(UserError, match=re.escape("server 10.0.0.1 is listed twice")):
        merge_command([a, a], tmp_path / "m.json")
    (tmp_path / "v2.json").write_text('{"version": "2.0", "server_list": []}')
    with pytest.raises(UserError,
                       match=re.escape('v2.json: version "2.0" is the rank table of Ascend 950')):
        merge_command([a, str(tmp_path / "v2.json")], tmp_path / "m.json")
    (tmp_path / "junk.json").write_text('{"version": "1.0"}')
    with pytest.raises(UserError, match=re.escape("junk.json: not an HCCL rank table")):
        merge_command([str(tmp_path / "junk.json")], tmp_path / "m.json")
    with pytest.raises(UserError, match=r"rank table .*nope.json not found"):
        merge_command([str(tmp_path / "nope.json")], tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_merge_rank_tables_is_pure():
    t = build_rank_table([("10.0.0.1", [(0, "192.168.1.1")])])
    assert merge_rank_tables([("a", t)]) == t


# --- command line -------------------------------------------------------------------------------

def test_cli_takes_device_lists_and_ranges(tmp_path, capsys):
    ips = "192.168.1.1,192.168.1.2"
    for i, devices in enumerate(["--devices=0,1", "--devices=0-1"]):   # tuple and string
        out = tmp_path / f"t{i}.json"
        cli("rank_table", devices, "--server_ip=10.0.0.1", f"--device_ips={ips}",
            f"--out={out}")
        assert [d["device_id"] for d in json.loads(out.read_text())["server_list"][0]["device"]
                ] == ["0", "1"]
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "t0.json"),
                                                    str(tmp_path / "t1.json")]


def test_cli_warns_across_the_group_boundary(tmp_path, capsys):
    cli("rank_table", "--devices=3,4", "--server_ip=10.0.0.1",
        "--device_ips=192.168.1.1,192.168.1.2", f"--out={tmp_path / 't.json'}")
    assert "packrun: warning: devices 3,4 cross the 0-3 / 4-7 group boundary" in \
        capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--devices=0,0"], "--devices: device 0 is listed twice"),
    (["--devices=0-16"], "--devices: device 16 is out of range"),
    (["--devices=0,1", "--server_ip=10.0.0"], "'10.0.0' is not an IPv4 address"),
    (["--devices=0,1", "--device_ips=192.168.1.1,192.168.1.1"],
     "device ip 192.168.1.1 is used twice"),
    (["--devices=0,1", "--server_ip="], "--server_ip is required"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    defaults = {"--server_ip": "10.0.0.1", "--device_ips": "192.168.1.1,192.168.1.2",
                "--out": str(tmp_path / "t.json")}
    given = {a.split("=")[0] for a in args}
    full = args + [f"{k}={v}" for k, v in defaults.items() if k not in given]
    with pytest.raises(SystemExit) as e:
        cli("rank_table", *full)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("packrun: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "t.json").exists()


def test_cli_merge(tmp_path, capsys):
    a = _write_table(tmp_path / "a.json", "10.0.0.1", ["192.168.1.1"])
    b = _write_table(tmp_path / "b.json", "10.0.0.2", ["192.168.2.1"])
    cli("merge_rank_tables", a, b, f"--out={tmp_path / 'm.json'}")
    assert json.loads((tmp_path / "m.json").read_text())["server_count"] == "2"
    with pytest.raises(SystemExit) as e:
        cli("merge_rank_tables", a, a, f"--out={tmp_path / 'm2.json'}")
    assert e.value.code == 2
    assert "server 10.0.0.1 is listed twice" in capsys.readouterr().err


def test_out_must_be_a_file_in_an_existing_directory(tmp_path):
    args = ("0", "10.0.0.1")
    with pytest.raises(UserError, match="is a directory"):
        rank_table_command(*args, tmp_path, device_ips="192.168.1.1")
    with pytest.raises(UserError, match="does not exist"):
        rank_table_command(*args, tmp_path / "no" / "t.json", device_ips="192.168.1.1")
    assert Path(rank_table_command(*args, tmp_path / "t.json", device_ips="192.168.1.1")).is_file()


def test_render_and_the_command_share_one_device_ip_resolver(tmp_path, monkeypatch,
                                                            no_default_hccn, make_job):
    """No /etc/hccn.conf: `packrun render` asks hccn_tool for the job's cards, as
    `packrun rank-table` does (one precedence: device_ips > hccn.conf > hccn_tool)."""
    from launcher.core.spec import load_job
    from launcher.render.artifacts import render_artifacts
    tool = tmp_path / "bin" / "hccn_tool"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\necho "ipaddr:192.168.100.10$2"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    spec = load_job(make_job(device="Ascend", cards_per_node=2, devices="4,6",
                             launcher="rank_table", hosts="10.0.0.1"))
    table = json.loads(render_artifacts(spec, "/runs/x")["rank_table.json"])
    assert [(d["device_id"], d["device_ip"]) for d in table["server_list"][0]["device"]] == [
        ("4", "192.168.100.104"), ("6", "192.168.100.106")]
    explicit = spec.replace(device_ips="10.1.0.1,10.1.0.2")
    table = json.loads(render_artifacts(explicit, "/runs/x")["rank_table.json"])
    assert table["server_list"][0]["device"][1]["device_ip"] == "10.1.0.2"


# --- version 1.2 (Atlas A3 super pods): each server's part from its npu-smi, merged -----------

STUBS = Path(__file__).resolve().parents[1] / "preflight" / "stubs"  # npu-smi, hccn_tool


def a3_server(monkeypatch, pod: str | None, sdid_base: int = 37748736):
    """This process on an Atlas A3 server, as the stub npu-smi / hccn_tool replay one."""
    monkeypatch.setenv("PATH", stub_tools_path(STUBS))
    monkeypatch.setenv("STUB_CHIPS_PER_NPU", "2")
    monkeypatch.setenv("STUB_DEVICES", "16")
    monkeypatch.setenv("STUB_SPOD_SDID_BASE", str(sdid_base))
    if pod is None:
        monkeypatch.delenv("STUB_SPOD_ID", raising=False)
    else:
        monkeypatch.setenv("STUB_SPOD_ID", pod)


def test_each_a3_server_writes_its_1_2_part_and_the_parts_merge(tmp_path, monkeypatch,
                                                                 no_default_hccn):
    parts = []
    for i, (pod, base) in enumerate([("1", 37748736), ("0", 37814272), ("1", 37748736 + 8)]):
        a3_server(monkeypatch, pod, base)
        ips = ",".join(f"192.168.{i}.{d}" for d in range(2))
        out = tmp_path / f"part_{i}.json"
        cli("rank-table", "--devices=0,1", f"--server_ip=172.16.0.{100 + i}",
            f"--server_id=node_{i}", f"--device_ips={ips}", f"--out={out}")
        parts.append(str(out))
    part = json.loads(Path(parts[0]).read_text())
    assert part["version"] == "1.2" and part["status"] == "completed"  # auto: a super pod
    assert part["server_list"][0]["device"][1] == {
        "device_id": "1", "super_device_id": "37748737", "device_ip": "192.168.0.1",
        "rank_id": "1"}
    assert part["super_pod_list"] == [{"super_pod_id": "1",
                                      "server_list": [{"server_id": "node_0"}]}]
    merged = tmp_path / "rank_table.json"
    merge_command(parts, merged)
    table = json.loads(merged.read_text())
    assert [s["server_id"] for s in table["server_list"]] == ["node_0", "node_2", "node_1"]
    assert [d["rank_id"] for s in table["server_list"] for d in s["device"]] == \
        [str(r) for r in range(6)]
    assert [p["super_pod_id"] for p in table["super_pod_list"]] == ["1", "0"]
    with pytest.raises(UserError, match="the tables mix versions"):
        merge_command([parts[0], _write_table(tmp_path / "v10.json", "10.0.0.9",
                                              ["192.168.9.1"])], tmp_path / "m.json")


def test_a_server_outside_a_super_pod_writes_1_0_and_refuses_1_2(tmp_path, monkeypatch,
                                                                  no_default_hccn):
    a3_server(monkeypatch, None)
    out = tmp_path / "t.json"
    cli("rank-table", "--devices=0", "--server_ip=10.0.0.1", "--device_ips=192.168.1.1",
        f"--out={out}")
    assert json.loads(out.read_text())["version"] == "1.0"
    with pytest.raises(UserError, match=r"names no super pod .* AI Server mode"):
        rank_table_command("0", "10.0.0.1", tmp_path / "u.json", device_ips="192.168.1.1",
                           rank_table_version="1.2")
    with pytest.raises(UserError,
                       match=re.escape("--rank_table_version=2.0: give auto, 1.0 or 1.2")):
        rank_table_command("0", "10.0.0.1", tmp_path / "u.json", device_ips="192.168.1.1",
                           rank_table_version="2.0")


def test_the_job_key_picks_the_table_version(make_job, tmp_path):
    from launcher.core.spec import load_job
    from launcher.render.artifacts import next_command, render_artifacts
    v12 = tmp_path / "a3.json"
    v12.write_text(json.dumps({
        "status": "completed", "version": "1.2", "server_count": "1",
        "server_list": [{"server_id": "node_0", "host_ip": "10.0.0.1", "device": [
            {"device_id": "0", "super_device_id": "0", "device_ip": "192.168.1.6",
             "rank_id": "0"}]}],
        "super_pod_list": [{"super_pod_id": "0", "server_list": [{"server_id": "node_0"}]}]}))
    spec = load_job(make_job(device="Ascend", cards_per_node=1, launcher="rank_table",
                             rank_table_file=str(v12)))
    assert render_artifacts(spec, "/runs/x")["rank_table.json"] == v12.read_text()
    with pytest.raises(UserError, match=re.escape("field 'version' is '1.2' but the job's "
                                                  "rank_table_version is '1.0'")):
        render_artifacts(spec.replace(rank_table_version="1.0"), "/runs/x")
    plain = spec.replace(rank_table_file="", rank_table_version="1.2", hosts="10.0.0.1")
    warned = []
    art = render_artifacts(plain, "/runs/x", warn=warned.append)
    assert "rank_table.json" not in art and "each server writes its part" in warned[0]
    assert next_command(plain, Path("/runs/x"), False, False).startswith(
        "packrun rank-table --rank_table_version=1.2 --devices=0-0 --server_ip=IP")
    with pytest.raises(UserError, match="give the merged table as rank_table_file"):
        render_artifacts(plain, "/runs/x")
