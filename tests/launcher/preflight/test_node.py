"""Ascend node checks (launcher/preflight/node.py) through the stub npu-smi and hccn_tool of
stubs/, which replay the real outputs of tests/fixtures/ascend: cards present and healthy, none
held (A3's several processes per chip, no process table on npu-smi 21.0.4, npu-smi failing in a
container), the device network, super pods, the CANN environment, a restart's own previous
workers waited for, and Slurm's gres/npu cards."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.core.ascend import ranktable as rt
from launcher.core.spec import load_job
from launcher.preflight import node
from launcher.render.artifacts import write_run_dir
from tests.helpers import packrun_env, stub_repo, stub_tools_path
from tests.launcher.core.ascend import reference as ref

pytestmark = pytest.mark.unit
STUBS = Path(__file__).parent / "stubs"
IPS = [f"192.168.100.{101 + i}" for i in range(16)]


def stub_env(**extra) -> dict:
    return {"PATH": stub_tools_path(STUBS), "ASCEND_HOME_PATH": "/usr/local/Ascend",
            "STUB_NPU_SMI_INFO": str(ref.NPU_SMI_910B3), "STUB_HCCN_IPS": ",".join(IPS)} | extra


def spec_of(make_job, **keys):
    return load_job(make_job(device="Ascend", **keys))


def server(cards, ips=IPS, sdids=None) -> rt.Server:
    return rt.Server("10.0.0.1", tuple(rt.Device(c, i, ips[c], sdids[c] if sdids else "")
                                       for i, c in enumerate(cards)))


def findings(spec, cards, env, srv=None, version=None, **kw):
    return node.check_node(spec, cards, srv, version, env=env, **kw)


def levels(found):
    return [(f.level, f.card) for f in found]


def test_a_healthy_910b3_node_passes(make_job):
    spec = spec_of(make_job, cards_per_node=2, nodes=2, hosts="10.0.0.[1-2]")
    found = findings(spec, [4, 7], stub_env(), server([4, 7]), "1.0")
    assert levels(found) == [("ok", None)]
    assert found[0].line("0 (n1)") == ("OK      node check: node 0 (n1): cards 4,7 present, "
                                       "healthy and free")


def test_cards_held_on_a3_name_card_pid_and_fix(make_job):
    spec = spec_of(make_job, cards_per_node=4)
    env = stub_env(STUB_NPU_SMI_INFO=str(ref.NPU_SMI_A3), STUB_CHIPS_PER_NPU="2")
    found = findings(spec, [0, 1, 4, 13], env)
    held = [f for f in found if "held by" in f.text]
    assert [(f.card, f.text.split(" (")[0]) for f in held] == [
        (0, "held by pid 3325989"), (0, "held by pid 3330598"), (0, "held by pid 3328327"),
        (0, "held by pid 3333165"), (1, "held by pid 3328327"), (13, "held by pid 3085961")]
    assert held[0].fix.startswith("end it (kill 3325989;")
    assert "card 13: held by pid 3085961" in held[-1].line("0 (n1)")
    assert all(f.level == "error" for f in held)


def test_missing_unhealthy_and_alarmed_cards(make_job):
    spec = spec_of(make_job, cards_per_node=2)
    found = findings(spec, [3, 9], stub_env(STUB_NPU_SMI_ALARM="3:0"))
    assert levels(found) == [("error", 3), ("error", 9)]
    assert "health Alarm (error code A4025021 8C03A000 8C084E00" in found[0].text
    assert found[1].text == "not present (npu-smi lists devices 0,1,2,3,4,5,6,7)"
    sick = ref.NPU_SMI_910B3.read_text().replace("| 2     910B3               | OK     ",
                                                  "| 2     910B3               | Alarm  ")
    path = Path(spec.output_dir) / "sick.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sick)
    found = findings(spec, [2], stub_env(STUB_NPU_SMI_INFO=str(path)))
    assert found[0].text == "health Alarm in npu-smi info"


def test_npu_smi_21_without_a_process_table_is_a_warning(make_job):
    spec = spec_of(make_job, cards_per_node=1)
    found = findings(spec, [5], stub_env(STUB_NPU_SMI_INFO=str(ref.NPU_SMI_910A)))
    assert levels(found)[0] == ("warning", None) and "lists no processes" in found[0].text


def test_npu_smi_failing_in_a_container(make_job, tmp_path):
    text = ref.NPU_SMI_CONTAINER.read_text().split("npu-smi info\n", 1)[1].split("root@")[0]
    out = tmp_path / "npu-smi.out"
    out.write_text(text)
    spec = spec_of(make_job, cards_per_node=8)
    found = findings(spec, [0], stub_env(STUB_NPU_SMI_INFO=str(out), STUB_NPU_SMI_EXIT="255"))
    assert levels(found) == [("error", None)]
    assert "'dcmi model initialized failed, because the device is used. ret is -8020'" in \
        found[0].text and "mount the cards (/dev/davinciN" in found[0].fix


def test_device_network_link_ip_and_net_health(make_job):
    spec = spec_of(make_job, cards_per_node=4, nodes=2, hosts="10.0.0.[1-2]",
                   net_health_check=True)
    ips = IPS[:2] + ["10.9.9.9"] + IPS[3:]
    env = stub_env(STUB_HCCN_DOWN="1", STUB_HCCN_UNHEALTHY="3", STUB_HCCN_IPS=",".join(
        ip if i != 3 else "" for i, ip in enumerate(IPS)))
    found = findings(spec, [0, 1, 2, 3], env, server([0, 1, 2, 3], ips), "1.0")
    texts = {(f.card, f.text.split(" (")[0]) for f in found}
    assert texts == {(1, "device-network link is DOWN"),
                     (2, f"device IP is {IPS[2]} but the rank table's device_ip is 10.9.9.9"),
                     (3, f"device IP is not set but the rank table's device_ip is {IPS[3]}"),
                     (3, "net health is Socket failed")}


def test_cann_environment_unset(make_job):
    env = stub_env()
    env.pop("ASCEND_HOME_PATH")
    found = findings(spec_of(make_job, cards_per_node=1), [0], env)
    assert found[0].text == "the CANN environment is not set (ASCEND_HOME_PATH is unset)"
    assert "set_env.sh" in found[0].fix


def test_super_pod_ids_against_a_1_2_table(make_job):
    spec = spec_of(make_job, cards_per_node=2)
    env = stub_env(STUB_SPOD_ID="0", STUB_SPOD_SDID_BASE="37748736")
    sdids = [str(37748736 + i) for i in range(16)]
    assert levels(findings(spec, [0, 1], env, server([0, 1], sdids=sdids), "1.2")) == \
        [("ok", None)]
    bad = sdids[:1] + ["5"] + sdids[2:]
    found = findings(spec, [0, 1], env, server([0, 1], sdids=bad), "1.2")
    assert found[0].text == "super_device_id is 5 in the rank table but npu-smi says SDID 37748737"
    found = findings(spec, [0, 1], env, server([0, 1]), "1.0")
    assert found[0].level == "warning" and "super pod 0 (SDID 37748736)" in found[0].text


def test_a_restart_waits_for_its_own_previous_workers(make_job, tmp_path):
    """A card held by a worker of this run's previous attempt (its command line names the run
    directory) is waited for on a restart, and judged at once on a first attempt."""
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2.5)",
                               str(run_dir)])
    info = tmp_path / "npu-smi.out"
    info.write_text(ref.NPU_SMI_A3.read_text().replace("3085961", str(worker.pid)))
    spec = spec_of(make_job, cards_per_node=1, held_card_wait_s=30)
    env = stub_env(STUB_NPU_SMI_INFO=str(info), STUB_CHIPS_PER_NPU="2")

    gone = "\n".join(line for line in ref.NPU_SMI_A3.read_text().splitlines()
                     if not line.startswith("| 6       1                 | 3085961"))

    def gone_later(cmd):
        if cmd == ["npu-smi", "info"] and worker.poll() is not None:
            info.write_text(gone)  # npu-smi no longer lists it
        return node.run_tool(cmd, env)
    first = findings(spec, [13], env, run_dir=run_dir, attempt=1)
    assert "a worker of this run's previous attempt" in first[0].text
    start = time.monotonic()
    again = findings(spec, [13], env, run_dir=run_dir, attempt=2, run=gone_later)
    assert levels(again) == [("ok", None)] and 1.5 < time.monotonic() - start < 20
    worker.wait()


def test_the_node_verb_uses_slurms_gres_cards_and_stops_the_node(make_job, tmp_path):
    spec = load_job(make_job(device="Ascend", cards_per_node=4, launcher="msrun"))
    run_dir, _ = write_run_dir(spec)
    gres = {"SLURM_JOB_NPUS": "4,5,6,7", "ASCEND_VISIBLE_DEVICES": "4,5,6,7",
            "NPU_DEVICE_ORDINAL": "4,5,6,7"}  # as gres_npu.c's _set_env exports them
    env = packrun_env(stub_env(**gres))

    def check(extra=None):
        return subprocess.run([sys.executable, "-m", "launcher.node", "check", str(run_dir), "0"],
                              capture_output=True, text=True, env=env | (extra or {}),
                              timeout=60)
    res = check()
    assert res.returncode == 0, res.stderr
    assert res.stdout == "4,5,6,7\n"
    assert "cards 4,5,6,7 from Slurm's gres/npu (ASCEND_VISIBLE_DEVICES=4,5,6,7)" in res.stderr
    a3 = {"STUB_NPU_SMI_INFO": str(ref.NPU_SMI_A3), "STUB_CHIPS_PER_NPU": "2",
          "SLURM_JOB_NPUS": "0,1,12,13", "ASCEND_VISIBLE_DEVICES": "0,1,12,13"}
    res = check(a3)
    assert res.returncode == 2 and res.stdout == "0,1,12,13\n"
    assert ", card 13: held by pid 3085961" in res.stderr
    assert "no rank was started" in res.stderr
    json_path = run_dir / "job.json"
    doc = json.loads(json_path.read_text())
    doc["spec"]["node_checks"] = "warn"
    json_path.write_text(json.dumps(doc))
    res = check(a3)
    assert res.returncode == 0 and "WARNING node check" in res.stderr
    res = check({"SLURM_JOB_NPUS": "0,1", "ASCEND_VISIBLE_DEVICES": "0,1"})
    assert res.returncode == 2 and "allocated 2 card(s)" in res.stderr
    assert 'ask for gres = "npu:4"' in res.stderr


def test_rank_table_sh_stops_before_any_rank_when_a_card_is_held(make_job, tmp_path):
    """The real launch script with the stub tools: a healthy node starts its ranks; a card held
    by another process stops the node with exit 2, naming node, card, pid and fix, and no rank
    is started."""
    worker = "import os\nprint('rank', os.environ['RANK_ID'], 'device', os.environ['DEVICE_ID'])\n"
    repo = stub_repo(tmp_path, worker)
    spec = load_job(make_job(device="Ascend", launcher="rank_table", cards_per_node=2,
                             devices="12,13", hosts="10.0.0.1", bind_cores=False,
                             device_ips=",".join(IPS[12:14])))
    run_dir, _ = write_run_dir(spec, python=sys.executable, repo=repo)
    script = str(run_dir / "rank_table.sh")
    # the same npu-smi without the process rows of NPUs 6 and 7 (devices 12-15)
    idle = "\n".join(line for line in ref.NPU_SMI_A3.read_text().splitlines()
                     if not (line.startswith(("| 6       ", "| 7       ")) and "|  " in line
                             and "Ascend910" not in line))
    free = tmp_path / "idle.txt"
    free.write_text(idle)
    env = os.environ | stub_env(STUB_NPU_SMI_INFO=str(free), STUB_CHIPS_PER_NPU="2")
    ok = subprocess.run(["bash", script], capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stderr
    assert (run_dir / "logs" / "worker_1.log").read_text() == "rank 1 device 13\n"
    held = subprocess.run(["bash", script], capture_output=True, text=True, timeout=120,
                          env=env | {"STUB_NPU_SMI_INFO": str(ref.NPU_SMI_A3)})
    assert held.returncode == 2
    assert "card 13: held by pid 3085961" in held.stderr and "fix: end it (kill 3085961" in \
        held.stderr
    assert "no rank was started" in held.stderr and "packrun: rank 0 on device" not in held.stdout


def test_packrun_check_runs_the_node_checks_on_its_node(make_job, monkeypatch):
    from launcher.preflight import checks
    spec = spec_of(make_job, cards_per_node=2, devices="12,13")
    for name, value in stub_env(STUB_NPU_SMI_INFO=str(ref.NPU_SMI_A3),
                                STUB_CHIPS_PER_NPU="2").items():
        monkeypatch.setenv(name, value)
    found = list(checks.check_node(spec, checks.Options()))
    assert str(found[0]) == "ok      node: cards 12,13 from key 'devices' = '12,13'"
    assert [f.level for f in found[1:]] == ["error"] * 5  # 4 processes on 12, 1 on 13
    assert str(found[-1]).startswith("error   node: card 13: held by pid 3085961")
    warned = list(checks.check_node(spec.replace(node_checks="warn"), checks.Options()))
    assert {f.level for f in warned[1:]} == {"warning"}
    assert list(checks.check_node(spec, checks.Options(slurm=True))) == []
    assert list(checks.check_node(spec.replace(node_checks="off"), checks.Options())) == []
