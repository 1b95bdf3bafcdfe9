"""`packrun logs RUN_DIR` (launcher/runs/logs.py): every log of a run merged, prefixed, filtered,
and followed until the run ends."""

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.core.logtail import console_text
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.spec import build_spec
from launcher.runs.logs import logs_command
from tests.helpers import packrun, wait_for, write_tiny_job


def run_dir(tmp_path: Path, world: int = 2) -> Path:
    d = tmp_path / "run"
    (d / "logs").mkdir(parents=True)
    spec = build_spec({"train_dir": str(tmp_path), "val_dir": str(tmp_path),
                       "cards_per_node": world}, check_paths=False)
    (d / "job.json").write_text(spec_to_json(spec))
    return d


@pytest.mark.unit
def test_logs_are_merged_in_time_order_with_a_prefix_per_source(tmp_path):
    d = run_dir(tmp_path)
    ms = "[WARNING] ME(1:2,MainProcess):2026-12-01-10:00:{:02d}.000.000 [x.py:1] {}"
    (d / "logs" / "worker_0.log").write_text(
        "starting 0\n" + ms.format(1, "r0 a") + "\nr0 untimed after a\n" + ms.format(5, "r0 b")
        + "\nprogress 1\rprogress 2\n")
    (d / "logs" / "worker_1.log").write_text(ms.format(3, "r1 a") + "\n" + ms.format(6, "r1 b")
                                             + "\n")
    (d / "logs" / "scheduler.log").write_text("2026-12-01 10:00:04,000 INFO scheduler up\n")
    (d / "logs" / "launcher.log").write_text("launch script says hi\n")
    (d / "logs" / "console.out").write_text("a copy of rank 0's console\n")
    (d / "slurm-7.out").write_text("packrun: job 7\n")
    out = io.StringIO()
    assert logs_command(str(d), console=out) == 0
    lines = out.getvalue().splitlines()
    timed = [ln for ln in lines if "2026-12-01" in ln or ln.startswith("[rank 0] starting")
             or "untimed" in ln]
    assert [re.sub(r"\[WARNING\].*\] ", "", ln) for ln in timed] == [
        "[rank 0] starting 0",          # before its file's first timestamp: placed with it
        "[rank 0] r0 a", "[rank 0] r0 untimed after a", "[rank 1] r1 a",
        "[scheduler] 2026-12-01 10:00:04,000 INFO scheduler up", "[rank 0] r0 b",
        "[rank 1] r1 b"]
    assert "[rank 0] progress 2" in lines and not any("progress 1" in ln for ln in lines)
    assert "[launcher] launch script says hi" in lines and "[slurm] packrun: job 7" in lines
    assert not any("a copy" in ln for ln in lines)

    out = io.StringIO()
    logs_command(str(d), ranks=(1,), console=out)
    assert out.getvalue().splitlines() and all(
        ln.startswith("[rank 1] ") for ln in out.getvalue().splitlines())
    out = io.StringIO()
    logs_command(str(d), ranks="0,1", grep=r"r\d b$", console=out)
    assert [ln.split("] ", 1)[0] + "]" for ln in out.getvalue().splitlines()] == [
        "[rank 0]", "[rank 1]"]


@pytest.mark.unit
def test_bad_filters_and_directories_are_exit_2(tmp_path):
    d = run_dir(tmp_path)
    for args, said in [((d, "--grep=("), "not a valid regular expression"),
                       ((d, "--ranks=a"), "give rank numbers"),
                       ((tmp_path / "nope",), "does not exist"),
                       ((tmp_path,), "not a packrun run directory")]:
        r = packrun("logs", *args)
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.unit
def test_follow_prints_new_lines_until_the_run_ends(tmp_path):
    d = run_dir(tmp_path, world=1)
    log = d / "logs" / "worker_0.log"
    log.write_text("first\n")
    # a live process naming the run directory: the run is going
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(d)])
    out = io.StringIO()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "rc", logs_command(str(d), follow=True, console=out, poll_s=0.05,
                           state_every_s=0.2)))
    t.start()
    try:
        wait_for(lambda: out.getvalue() == "[rank 0] first\n", 30, "the first line")
        with open(log, "a") as f:
            f.write("second\nthird, not yet ended")
        wait_for(lambda: "second" in out.getvalue(), 30, "the second line")
        time.sleep(0.3)   # six more polls of the file: the partial line stays unprinted
        assert out.getvalue() == "[rank 0] first\n[rank 0] second\n"   # whole lines only
        assert t.is_alive()
    finally:
        (d / "logs" / "worker_0.exit").write_text("0\n")
        proc.kill()
        proc.wait()
    t.join(timeout=30)
    assert not t.is_alive() and result["rc"] == 0
    assert out.getvalue().endswith("[rank 0] third, not yet ended\n")


@pytest.mark.e2e
def test_logs_of_a_two_worker_run_show_every_line_once(tmp_path, digits_2class):
    job = write_tiny_job(tmp_path / "tiny.toml", digits_2class)
    r = packrun("run", job, "--launcher=msrun", "--workers=2", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = next((tmp_path / "runs").glob("tiny-*"))
    out = packrun("logs", d)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for rank in (0, 1):
        text = console_text((d / "logs" / f"worker_{rank}.log").read_bytes().decode(
            "utf-8", "replace"))
        want = [f"[rank {rank}] {ln}" for ln in text.split("\n")]
        if want and want[-1] == f"[rank {rank}] ":
            want.pop()
        got = [ln for ln in lines if ln.startswith(f"[rank {rank}] ")]
        assert sorted(got) == sorted(want) and len(want) > 1   # every line, once
        assert [ln for ln in got] == want                       # in its file's order
    assert any(ln.startswith("[scheduler] ") for ln in lines)
    assert any(ln.startswith("[launcher] ") for ln in lines)

    one = packrun("logs", d, "--ranks=1").stdout.splitlines()
    assert one and all(ln.startswith("[rank 1] ") for ln in one)
    found = packrun("logs", d, "--grep=^End training").stdout.splitlines()
    assert found == [ln for ln in lines if ln.split("] ", 1)[1].startswith("End training")]
    assert "[rank 0] End training" in "\n".join(found)   # (msrun echoes it in launcher.log)


@pytest.mark.unit
def test_each_node_of_a_launch_over_ssh_has_its_own_prefix(tmp_path):
    d = run_dir(tmp_path)
    (d / "logs" / "node0.out").write_text("packrun: node 0 of 2: msrun with 1 worker(s)\n")
    (d / "logs" / "node1.out").write_text("packrun: node 1 of 2: msrun with 1 worker(s)\n"
                                          "[node1] Connection to 10.0.0.2 closed by remote host.\n")
    out = io.StringIO()
    assert logs_command(str(d), console=out) == 0
    lines = out.getvalue().splitlines()
    assert "[node0] packrun: node 0 of 2: msrun with 1 worker(s)" in lines
    assert "[node1] packrun: node 1 of 2: msrun with 1 worker(s)" in lines
