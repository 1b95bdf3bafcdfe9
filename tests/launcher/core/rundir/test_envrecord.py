"""env.json (launcher/core/rundir/envrecord.py): what a run ran with, written at every attempt;
a resume or restart names each change with its old and new value; `packrun status` shows it;
the native kernels' digest is the library's and costs no compiler call once cached."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from importlib import metadata

import pytest

from launcher.core import native_digest
from launcher.core.rundir import envrecord
from launcher.core.rundir.names import ENV_JSON
from tests.helpers import need_tool, packrun_in_process

pytestmark = pytest.mark.unit


def test_the_record_holds_versions_hosts_variables_and_the_rank_table(tmp_path):
    (tmp_path / "rank_table.json").write_text('{"version": "1.0"}')
    env = {"HCCL_CONNECT_TIMEOUT": "1200", "MS_ENABLE_X": "1", "ASCEND_RT_VISIBLE_DEVICES": "0,1",
           "CUDA_VISIBLE_DEVICES": "0", "HOME": "/root", "SLURM_JOB_NODELIST": "node[1-2]"}
    assert envrecord.record(tmp_path, env) == []  # the first: nothing to compare with
    rec = json.loads((tmp_path / ENV_JSON).read_text())
    assert rec["schema"] >= 2 and rec["recorded"] > 0
    assert rec["variables"] == {k: v for k, v in env.items() if k not in ("HOME",
                                                                          "SLURM_JOB_NODELIST")}
    assert rec["hosts"] == ["node1", "node2"]
    assert rec["python"].count(".") == 2 and rec["mindspore"] and rec["numpy"].startswith("1.")
    assert rec["rank_table_sha256"] == hashlib.sha256(b'{"version": "1.0"}').hexdigest()
    assert rec["commit"] is None or len(rec["commit"]) == 40
    assert isinstance(rec["cores"], int) and rec["cores"] >= 1


def test_a_second_attempt_names_each_change_with_old_and_new(tmp_path):
    envrecord.record(tmp_path, {"HCCL_BUFFSIZE": "200", "MS_OLD": "1"})
    rec = json.loads((tmp_path / ENV_JSON).read_text())
    rec["mindspore"] = "2.2.0"
    (tmp_path / ENV_JSON).write_text(json.dumps(rec))
    said = envrecord.record(tmp_path, {"HCCL_BUFFSIZE": "400", "CUDA_HOME": "/cuda"})
    assert f"mindspore: 2.2.0 -> {metadata.version('mindspore')}" in said
    assert "HCCL_BUFFSIZE: 200 -> 400" in said
    assert "MS_OLD: 1 -> (none)" in said and "CUDA_HOME: (none) -> /cuda" in said
    assert len(said) == 4  # the time it was recorded is no change
    assert envrecord.record(tmp_path, {"HCCL_BUFFSIZE": "400", "CUDA_HOME": "/cuda"}) == []


def test_cann_and_driver_versions_where_installed(tmp_path, monkeypatch):
    arch = platform.machine()
    info = tmp_path / f"{arch}-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir()
    info.write_text("package_name=Ascend-cann-toolkit\nversion=8.0.RC2\n")
    assert envrecord.cann_version({"ASCEND_HOME_PATH": str(tmp_path)}) == "8.0.RC2"
    assert envrecord.cann_version({"ASCEND_HOME_PATH": str(tmp_path / "none")}) is None
    driver = tmp_path / "version.info"
    driver.write_text("Version=24.1.rc2\n")
    monkeypatch.setattr(envrecord, "ASCEND_DRIVER_INFO", str(driver))
    assert envrecord.driver_version() == "Ascend 24.1.rc2"


def test_the_native_digest_is_the_librarys_and_is_cached(tmp_path, monkeypatch):
    from src.native import kernels
    compiler = need_tool("g++", "to compute the native kernels' digest")
    assert kernels._library_name(compiler) == \
        f"packrun-native-{native_digest.library_digest()}.so"
    monkeypatch.setattr(native_digest, "cache_dir", lambda: tmp_path)
    calls = []
    real = subprocess.run
    monkeypatch.setattr(native_digest.subprocess, "run",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    first = native_digest.library_digest()
    assert native_digest.library_digest() == first and len(calls) == 1  # asked once
    t0 = time.perf_counter()
    native_digest.library_digest()
    assert time.perf_counter() - t0 < 0.5


def test_status_shows_the_environment(tmp_path, make_job):
    job = make_job()
    from launcher.core.rundir.job_json import spec_to_json
    from launcher.core.spec import load_job
    rd = tmp_path / "rd"
    (rd / "logs").mkdir(parents=True)
    (rd / "job.json").write_text(spec_to_json(load_job(job, check_paths=False)))
    envrecord.record(rd, {"HCCL_CONNECT_TIMEOUT": "600"})
    r = packrun_in_process("status", rd)
    assert r.returncode == 0, r.stderr
    assert "environment: packrun " in r.stdout and "MindSpore " in r.stdout
    assert "HCCL_CONNECT_TIMEOUT=600" in r.stdout



def test_a_restart_logs_what_changed_since_the_attempt_before(tmp_path, monkeypatch):
    from launcher.core.rundir import attempts
    (tmp_path / "logs").mkdir()
    said: list[str] = []
    monkeypatch.setattr(attempts.log, "warning", said.append)
    monkeypatch.setenv("HCCL_CONNECT_TIMEOUT", "600")
    attempts.begin(tmp_path, "run", 2, 1)
    assert said == []  # the first attempt: nothing to compare with
    monkeypatch.setenv("HCCL_CONNECT_TIMEOUT", "1200")
    assert attempts.begin(tmp_path, "run", 2, 1) == 2
    assert said == [
        "packrun: attempt 2 runs with a changed environment: HCCL_CONNECT_TIMEOUT: 600 -> 1200"]
    assert envrecord.read(tmp_path)["variables"]["HCCL_CONNECT_TIMEOUT"] == "1200"
