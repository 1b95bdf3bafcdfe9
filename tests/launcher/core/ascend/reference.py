"""The real Ascend outputs of tests/fixtures/ascend (SOURCES.md there names each source), and
the two ways tests take them apart: a command's section of mind-cluster's faultdiag captures,
and the JSON examples of HCCL's docs with their `//` comments deleted (as the docs say to)."""

import json
import re
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "ascend"
NPU_SMI_910B3 = FIXTURES / "npu-smi-info_910B3_8cards_no_processes_vllm-ascend-issue-6672.txt"
NPU_SMI_A3 = FIXTURES / "npu-smi-info_A3_16chips_with_processes_vllm-ascend-issue-4930.txt"
NPU_SMI_910A = FIXTURES / ("npu-smi-info_910A_8cards_no_process_table_haicgu-training-slurm-"
                           "1111.txt")
NPU_SMI_CONTAINER = FIXTURES / "log_npu-smi-in-container-fails_vllm-ascend-issue-632_excerpt.txt"
FAULTDIAG = "mind-cluster_ascend-faultdiag_test_st_module_testcase_kg_parse_npu_info_{}.txt"
FAULTDIAG_BEFORE = FIXTURES / FAULTDIAG.format("before")
FAULTDIAG_AFTER = FIXTURES / FAULTDIAG.format("after")
SHMEM_README = FIXTURES / "hicann-shmem_examples_rma_d2h_demo_README.md"
A3_DOC = FIXTURES / "hicann-hccl_zh_cluster_info_config_rank_table_config_a3.md"
A5_DOC = FIXTURES / "hicann-hccl_zh_cluster_info_config_rank_table_config_a5.md"

_COMMAND = re.compile(r"^(/usr/\S+|lspci|cat |pip )")


def section(path: Path, command: str) -> str:
    """What `command` printed in a faultdiag capture (the lines up to the next command)."""
    lines = path.read_text().splitlines()
    start = lines.index(command) + 1
    end = next((i for i in range(start, len(lines)) if _COMMAND.match(lines[i])), len(lines))
    return "\n".join(lines[start:end]).strip("\n") + "\n"


def spod_info() -> str:
    """The `npu-smi info -t spod-info -i 0 -c 0` example output of hicann/shmem's README."""
    text = SHMEM_README.read_text()
    after = text.split("\u8f93\u51fa\u793a\u4f8b\uff1a", 1)[1]  # "output example:"
    block = after.split("```bash\n", 1)[1].split("```", 1)[0]
    return block


def strip_comments(text: str) -> str:
    """JSON with `// ...` comments to the end of the line (outside strings) deleted."""
    out = []
    for line in text.splitlines():
        in_string = False
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                in_string = not in_string
            elif ch == "/" and not in_string and line[i:i + 2] == "//":
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def doc_tables(path: Path) -> list[dict]:
    """Every ```json example of an HCCL doc page, comments deleted, parsed."""
    blocks = re.findall(r"```json\n(.*?)```", path.read_text(), re.S)
    return [json.loads(strip_comments(b)) for b in blocks]
