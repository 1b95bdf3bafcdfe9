"""HCCL rank tables 1.0 / 1.2 (launcher/core/ascend/ranktable.py): HCCL's own doc examples
(comments deleted) and MindSpore's sample tables are accepted, tables made the way Ascend's
generator (mind-cluster ascend-operator) makes them are accepted, and each rule of HCCL's parser
refuses a table that breaks it, naming the field. Version 2.0 is refused by name."""

import copy
import json
import re

import pytest

from launcher.core.ascend import ranktable as rt
from tests.launcher.core.ascend import reference as ref

pytestmark = pytest.mark.unit


def a3_super_pod() -> dict:
    return ref.doc_tables(ref.A3_DOC)[0]


def test_hccl_doc_examples_and_mindspore_samples_are_accepted():
    v12, v10 = ref.doc_tables(ref.A3_DOC)
    t = rt.check(v12)
    assert t.version == "1.2" and t.world == 16
    assert t.super_pods == (("0", ("node_0", "node_1")), ("1", ("node_2", "node_3")))
    assert [s.super_pod_id for s in t.servers] == ["0", "0", "1", "1"]
    assert t.servers[1].devices[0] == rt.Device(0, 4, "192.168.2.6", "4")
    assert rt.check(v10).version == "1.0"
    for doc in ("a2", "910"):
        for table in ref.doc_tables(ref.FIXTURES / f"hicann-hccl_zh_cluster_info_config_"
                                                   f"rank_table_config_{doc}.md"):
            if "group_list" in table:  # the 910 page's older template: no version
                with pytest.raises(rt.TableError, match="template without 'version'"):
                    rt.check(table)
            else:
                assert rt.check(table).version == "1.0"
    for name in ("8pcs", "16pcs"):
        path = ref.FIXTURES / ("mindspore-docs_docs_sample_code_startup_method_rank_table_"
                               f"{name}.json")
        with pytest.raises(rt.TableError, match=r"'device_ip' '192\.1\.\*\.\d+' is not an IP"):
            rt.check(json.loads(path.read_text()))  # the samples mask their addresses with *
        parts = path.read_text().split("*")  # each masked number its own value
        unmasked = json.loads("".join(p + (str(20 + i) if i < len(parts) - 1 else "")
                                      for i, p in enumerate(parts)))
        assert rt.check(unmasked).world == int(name[:-3])


def test_version_2_0_is_refused_by_name():
    for table in ref.doc_tables(ref.A5_DOC):
        with pytest.raises(rt.TableError, match=r'version "2.0" is the rank table of Ascend 950'):
            rt.check(table)


def generator_table(servers: int, devices: int, sp_block: int) -> dict:
    """A 1.2 table as mind-cluster's ascend-operator writes it: Go struct order (status,
    server_list, server_count, version, super_pod_list), rank_id = podRank * devices + index,
    super_device_id per device, logical super_pod_id = podRank / (sp_block / devices)
    (GetLogicSuperPodId, GatherServerListForHardStrategy)."""
    per_pod = max(sp_block // devices, 1)
    server_list, pods = [], []
    for pod_rank in range(servers):
        server_list.append({
            "device": [{"device_id": str(i), "device_ip": f"10.{pod_rank}.0.{i + 1}",
                        "super_device_id": str(37748736 + pod_rank * 65536 + i),
                        "rank_id": str(pod_rank * devices + i)} for i in range(devices)],
            "server_id": f"7.0.0.{pod_rank + 1}", "host_ip": f"7.0.0.{pod_rank + 1}",
            "container_ip": f"192.168.149.{pod_rank + 1}", "hardware_type": "800I-A3-64G"})
        vid = pod_rank // per_pod if sp_block > 0 else 0
        if len(pods) == vid:
            pods.append({"super_pod_id": str(vid), "server_list": []})
        pods[vid]["server_list"].append({"server_id": f"7.0.0.{pod_rank + 1}"})
    return {"status": "completed", "server_list": server_list, "server_count": str(servers),
            "version": "1.2", "super_pod_list": pods}


@pytest.mark.parametrize("servers,devices,sp_block", [(1, 8, 8), (2, 2, 2), (4, 16, 32),
                                                      (4, 8, 0)])
def test_tables_made_as_the_generator_makes_them_are_accepted(servers, devices, sp_block):
    table = rt.check(generator_table(servers, devices, sp_block))
    assert table.world == servers * devices
    expected = servers // max(sp_block // devices, 1) if sp_block else 1
    assert len(table.super_pods) == expected


def test_merged_parts_are_grouped_by_super_pod_and_renumbered():
    parts = [rt.Part("node_2", ((0, "192.168.3.6", "0"),), "172.16.0.102", "1"),
             rt.Part("node_0", ((0, "192.168.1.6", "0"), (1, "192.168.1.7", "1")),
                     "172.16.0.100", "0"),
             rt.Part("node_3", ((0, "192.168.4.6", "4"),), "172.16.0.103", "1")]
    table = rt.build_v12(parts)
    assert [s["server_id"] for s in table["server_list"]] == ["node_2", "node_3", "node_0"]
    assert [d["rank_id"] for s in table["server_list"] for d in s["device"]] == \
        ["0", "1", "2", "3"]
    assert table["super_pod_list"] == [
        {"super_pod_id": "1", "server_list": [{"server_id": "node_2"}, {"server_id": "node_3"}]},
        {"super_pod_id": "0", "server_list": [{"server_id": "node_0"}]}]
    assert rt.parts_of(rt.check(table))[2].devices == parts[1].devices
    with pytest.raises(rt.TableError, match="super_device_id' 0 is also"):
        rt.build_v12([parts[0], rt.Part("node_4", ((1, "192.168.5.6", "0"),), "", "1")])
    with pytest.raises(rt.TableError, match="AI Server mode"):
        rt.build_v12([rt.Part("node_9", ((0, "192.168.9.6", "0"),))])


def broken(change) -> dict:
    table = copy.deepcopy(a3_super_pod())
    change(table)
    return table


def _dev(t, server, device):
    return t["server_list"][server]["device"][device]


@pytest.mark.parametrize("change,message", [
    (lambda t: _dev(t, 0, 0).update(rank_id=0), "field 'rank_id' is 0, not a string"),
    (lambda t: t.update(server_count=4), "field 'server_count' is 4, not a string"),
    (lambda t: t.update(status="initializing"), "field 'status' is 'initializing'"),
    (lambda t: t.update(version="1.1"), "field 'version' is '1.1'"),
    (lambda t: (_dev(t, 0, 3).update(rank_id="4"), _dev(t, 1, 0).update(rank_id="3")),
     "server 0 (node_0): rank ids [0, 1, 2, 4] are not consecutive"),
    (lambda t: [_dev(t, 3, i).update(rank_id=str(int(_dev(t, 3, i)["rank_id"]) + 1))
                for i in range(4)], "rank ids are [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14"),
    (lambda t: t["server_list"].insert(1, t["server_list"].pop(2)),
     "super pod 0's servers are not listed together"),
    (lambda t: t["super_pod_list"][1]["server_list"].append({"server_id": "node_9"}),
     "server_id 'node_9' is not in the table's server_list"),
    (lambda t: t["super_pod_list"][1]["server_list"].pop(),
     "server 'node_3' is in server_list but in no super pod"),
    (lambda t: t["server_list"][0].update(server_id="n" * 65),
     "field 'server_id' has 65 characters; HCCL allows at most 64"),
    (lambda t: _dev(t, 1, 2).pop("super_device_id"),
     "field 'super_device_id' is on 15 device(s) but not on 1"),
    (lambda t: _dev(t, 1, 2).update(super_device_id="5"),
     "field 'super_device_id' 5 is also server node_1 device 1's in super pod 0"),
    (lambda t: _dev(t, 1, 2).update(super_device_id=""), "field 'super_device_id' is ''"),
    (lambda t: t["super_pod_list"][1].update(super_pod_id="0"),
     "field 'super_pod_id' is listed twice"),
    (lambda t: _dev(t, 2, 0).update(device_ip="192.168.1.6"),
     "field 'device_ip' 192.168.1.6 is also server node_0 device 0's"),
])
def test_each_rule_of_hccls_parser_refuses_a_table_that_breaks_it(change, message):
    with pytest.raises(rt.TableError) as e:
        rt.check(broken(change))
    assert message in str(e.value)


def test_server_id_is_any_string_in_1_2_and_ai_server_mode_has_no_super_device_id():
    def rename(t):
        for s in t["server_list"]:
            s["server_id"] = "rack 0/" + s["server_id"] * 8
        for pod in t["super_pod_list"]:
            for s in pod["server_list"]:
                s["server_id"] = "rack 0/" + s["server_id"] * 8
    table = rt.check(broken(rename))
    assert table.servers[0].server_id == "rack 0/" + "node_0" * 8  # 55 characters
    ai_server = broken(lambda t: ([d.pop("super_device_id") for s in t["server_list"]
                                   for d in s["device"]], t.pop("super_pod_list")))
    assert rt.check(ai_server).super_pods == ()
    v10 = ref.doc_tables(ref.A3_DOC)[1]
    _dev(v10, 0, 0)["super_device_id"] = "0"
    with pytest.raises(rt.TableError, match=re.escape('belongs to version "1.2" tables')):
        rt.check(v10)
