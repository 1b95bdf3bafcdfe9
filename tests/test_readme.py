"""README.md stays true: the job-file reference is generated from the spec, and the test command
it quotes is the one .ci/run runs. PACKRUN_UPDATE_README=1 rewrites the reference block."""

import os
import re
from pathlib import Path

from launcher.spec import reference_markdown

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- reference:start[^\n]*-->\n)(.*?)(<!-- reference:end -->)", re.S)


def test_job_file_reference_matches_the_spec():
    readme = (ROOT / "README.md").read_text()
    m = BLOCK.search(readme)
    assert m, "README.md lost its reference:start/end markers"
    if os.environ.get("PACKRUN_UPDATE_README"):
        readme = BLOCK.sub(lambda m: m.group(1) + reference_markdown() + m.group(3), readme)
        (ROOT / "README.md").write_text(readme)
        m = BLOCK.search(readme)
    assert m.group(2) == reference_markdown(), \
        "README's job-file reference is stale: PACKRUN_UPDATE_README=1 pytest tests/test_readme.py"


def test_readme_opens_with_demo_and_test_commands_and_ci_runs_the_quoted_test_command():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "packrun demo" in first_block and "bash .ci/run" in first_block
    quoted = readme.split("the test command, which is", 1)[1].split("```bash\n", 1)[1]
    command = quoted.split("\n", 1)[0].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in [line.strip() for line in ci], (command, ".ci/run must run it verbatim")
