"""Job-key flags reach the spec as typed (launcher/cli/flags.py): fire reads `--name=1.10` as the
number 1.1 and `--name=20240101_1` as 202401011; keep_text() quotes the value of every text or
number job key first, so a job name is the one typed, and one that cannot be a name is refused,
quoted as typed."""

from __future__ import annotations

import pytest

from launcher.cli.flags import keep_text
from tests.helpers import packrun_in_process, small_job


@pytest.mark.unit
@pytest.mark.parametrize("typed", ["20240101_1", "1.10", "1e3", "0x10", "007", "[1, 2]",
                                   "None", "True", "{'a': 1}"])
def test_string_keys_keep_the_text_as_typed(typed, data, tmp_path):
    job = small_job(tmp_path, data)
    r = packrun_in_process("render", job, "--print", f"--name={typed}")
    if any(c in typed for c in "[]{}' ,"):  # not a valid name: refused, naming it as typed
        assert r.returncode == 2 and f"key 'name' is {typed!r}" in r.stderr, r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert f'"name": "{typed}"' in r.stdout
    assert f"/{typed}-YYYYmmdd-HHMMSS/job.json" in r.stdout


@pytest.mark.unit
def test_keep_text_touches_only_text_and_number_job_keys():
    assert keep_text(["run", "j.toml", "--name=1.10", "--epochs", "3", "--hflip=false",
                      "--env_setup=['a']", "--workers=2", "--resume", "x"]) == \
        ["run", "j.toml", "--name='1.10'", "--epochs", "'3'", "--hflip=false",
         "--env_setup=['a']", "--workers=2", "--resume", "x"]
    assert keep_text(["--master-addr=1e3"]) == ["--master-addr='1e3'"]
