"""npu-smi output (launcher/core/ascend/npusmi.py), on the real outputs of tests/fixtures/ascend:
the 910B3 table with idle cards, Atlas A3's two chips per NPU with Phy-IDs, several processes per
chip and empty names, npu-smi 21.0.4 without a process table, a widened table, health pages (OK
and Alarm), spod-info and the chip map."""

import pytest

from launcher.core.ascend import npusmi
from tests.launcher.core.ascend import reference as ref

pytestmark = pytest.mark.unit


def test_910b3_eight_cards_each_idle():
    info = npusmi.parse_info(ref.NPU_SMI_910B3.read_text())
    assert info.version == "25.2.0"
    assert [c.device for c in info.chips] == list(range(8))
    assert {c.health for c in info.chips} == {"OK"} and info.chips[0].name == "910B3"
    assert info.chips[5].bus_id == "0000:02:00.0"
    assert info.has_process_table and info.idle_npus == set(range(8)) and not info.processes


def test_a3_two_chips_per_npu_mapped_to_phy_ids_with_their_processes():
    info = npusmi.parse_info(ref.NPU_SMI_A3.read_text())
    assert len(info.chips) == 16
    assert [(c.npu, c.chip, c.device) for c in info.chips[:4]] == [
        (0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]
    assert info.chips[15] == npusmi.Chip(7, 1, 15, "Ascend910", "OK", "0000:83:00.0")
    # several processes per chip, empty names, each pid once per device
    assert [p.pid for p in info.holders(0)] == [3325989, 3330598, 3328327, 3333165]
    assert [p.pid for p in info.holders(1)] == [3328327]   # NPU 0 chip 1 = Phy-ID 1
    assert [p.pid for p in info.holders(13)] == [3085961]  # NPU 6 chip 1
    assert {p.name for p in info.processes} == {""}
    assert info.holders(4) == [] and info.idle_npus == {2, 3, 4, 5}


def test_npu_smi_21_prints_no_process_table():
    info = npusmi.parse_info(ref.NPU_SMI_910A.read_text())
    assert info.version == "21.0.4" and len(info.chips) == 8
    assert not info.has_process_table and info.holders(0) == []


def test_a_wider_table_with_an_extra_column_parses_the_same():
    """Newer npu-smi versions widen the frame and add `Process id in container`: the parser
    goes by cells and header names, not by column positions."""
    text = ref.NPU_SMI_A3.read_text()
    wide = "\n".join(line.replace("|", "    |") for line in text.splitlines())
    wide = wide.replace("| Process name", "| Process id in container    | Process name")
    wide = wide.replace("|                          | 50128",
                        "| NA    |                          | 50128")
    info = npusmi.parse_info(wide)
    assert [(c.npu, c.chip, c.device) for c in info.chips] == \
        [(c.npu, c.chip, c.device) for c in npusmi.parse_info(text).chips]
    assert [p.pid for p in info.holders(0)] == [3325989, 3330598, 3328327, 3333165]


def test_npu_smi_failing_in_a_container_is_recognised():
    text = ref.NPU_SMI_CONTAINER.read_text()
    out = text.split("npu-smi info\n", 1)[1].split("root@", 1)[0]
    assert npusmi.failure_text(out) == ("dcmi model initialized failed, because the device is "
                                        "used. ret is -8020")
    with pytest.raises(npusmi.ParseError, match="no card table"):
        npusmi.parse_info(out)


def test_health_ok_and_alarm():
    ok = npusmi.parse_health(ref.section(
        ref.FAULTDIAG_BEFORE, "/usr/local/bin/npu-smi info -i 0 -c 0 -t health"))
    assert ok.ok and ok.error_code == "NA"
    alarm = npusmi.parse_health(ref.section(
        ref.FAULTDIAG_AFTER, "/usr/local/bin/npu-smi info -i 0 -c 0 -t health"))
    assert not alarm.ok and alarm.status == "Alarm"
    assert alarm.error_code == "A4025021 8C03A000 8C084E00"
    assert alarm.error_information.startswith("ascend_monitor adda heart beat lost error; ")
    assert alarm.error_information.endswith("event state=Heartbeat Lost.")


def test_spod_info_and_the_chip_map():
    pod = npusmi.parse_spod_info(ref.spod_info())
    assert pod == npusmi.SuperPod("16777216", "0", "384", "4")
    assert npusmi.parse_spod_info("Invalid card id.\n") is None
    chips = npusmi.parse_chip_map(ref.section(ref.FAULTDIAG_BEFORE,
                                              "/usr/local/bin/npu-smi info -m"))
    assert chips == {i: (i, 0) for i in range(8)}
