"""The failure signatures (launcher/core/ascend/signatures.py): every entry of the table matches
the verbatim line of its reference and says what it means and what to do; the order puts causes
before symptoms."""

import re

import pytest

from launcher.core.ascend import signatures
from tests.launcher.core.ascend import reference as ref

pytestmark = pytest.mark.unit


def log(name: str) -> str:
    return (ref.FIXTURES / name).read_text()


def rank_table_fault_lines() -> list[str]:
    text = log("hicann-hccl_zh_fault_diagnosis_rank_table_load_fail.md")
    return re.findall(r"```text\n(.*?)\n```", text, re.S)


def explain(text: str, rank: int | None = 0) -> signatures.Match:
    found = signatures.find([("worker.log", rank, text)])
    assert found is not None
    return found


# (reference text, code, words the explanation says, words the next step says)
CASES = {
    "EJ0001": (lambda: log("log_EJ0001_LlamaFactory-issue-3839_excerpt.txt"), "EJ0001",
               ["rank 3", "still held"], ["npu-smi info", "wait 10 s"]),
    "EI0002": (lambda: log("log_EI0002_vllm-ascend-issue-3413_excerpt.txt"), "EI0002",
               ["rank 101 waited", "for rank 24", "collective_timeout"],
               ["logs/worker_24.log", "raise collective_timeout", "-link -g"]),
    "EI0006": (lambda: log("log_EI0006_vllm-ascend-issue-486_excerpt.txt"), "EI0006",
               ["rank 1 timed out", "HCCL_CONNECT_TIMEOUT", "cluster_timeout"],
               ["-net_health -g", "raise cluster_timeout"]),
    "invalid device": (lambda: log("log_invalid-device_gpustack-issue-3352_excerpt.txt"),
                       "Set visible device failed", ["device 0", "visible devices (4)"],
                       ["devices", "gres/npu"]),
    "EI0004 path": (lambda: rank_table_fault_lines()[0], "EI0004",
                    ["path /ranktable.json is not a valid real path"], ["packrun check"]),
    "EI0004 super_device_id": (lambda: rank_table_fault_lines()[1], "EI0004",
                               ["super_device_id[] is invalid"], ["super_device_id"]),
    "EI0014": (lambda: rank_table_fault_lines()[2], "EI0014",
               ["device IP 127.10.0.0", "has 127.10.0.1"], ["hccn_tool -i <device> -ip -g"]),
    "msrun first timed out": (
        lambda: ("The total number of timed out node is 1. Timed out node list is: [3], worker 3 "
                 "is the first one timed out, please check its log."),
        "msrun timeout", ["worker 3"], ["logs/worker_3.log"]),
    "msrun time out nodes": (lambda: log("log_msrun_MindAct-issue-1983_excerpt.txt"),
                             "msrun timeout", ["worker 3"], ["logs/worker_3.log"]),
    "msrun worker exit": (lambda: ("[ERROR] ME(1:2,MainProcess):2025-03-10-09:40:12.444.000 "
                                   "[mindspore/parallel/cluster/process_entity/_api.py:318] "
                                   "Worker process 162146 exit with exception. Error code: 1."),
                          "msrun worker exit", ["process 162146", "error code 1"],
                          ["first failing rank"]),
}


@pytest.mark.parametrize("name", CASES)
def test_each_signature_explains_its_reference_line(name):
    text, code, says, step = CASES[name]
    found = explain(text())
    assert found.signature.code == code
    for words in says:
        assert words in found.explanation, found.explanation
    for words in step:
        assert words in found.next_step, found.next_step
    assert found.line in text()


def test_the_sources_of_the_msrun_lines_print_what_the_signatures_match():
    """The msrun lines above are the ones MindSpore's source formats."""
    cc = log("mindspore_meta_server_node.cc_timeout-excerpt.txt")
    assert '" is the first one timed out, please check its log."' in cc
    py = log("mindspore_msrun_api.py_join_processes-excerpt.txt")
    assert 'f"Worker process {p.pid} exit with exception. Error code: {ret_code}."' in py


def test_every_signature_of_the_table_has_a_case_here():
    assert {s.code for s in signatures.SIGNATURES} == {c[1] for c in CASES.values()}


def test_a_cause_in_any_log_wins_over_a_symptom_in_the_failing_ranks_log():
    found = signatures.find([
        ("logs/worker_1.log", 1, log("log_EI0006_vllm-ascend-issue-486_excerpt.txt")),
        ("logs/worker_3.log", 3, log("log_EJ0001_LlamaFactory-issue-3839_excerpt.txt"))])
    assert found is not None and found.signature.code == "EJ0001" and found.rank == 3
    assert found.to_dict()["file"] == "logs/worker_3.log"


def test_unknown_failures_have_no_explanation():
    assert signatures.find([("w.log", 0, "ValueError: bad things\nTraceback ...\n")]) is None
