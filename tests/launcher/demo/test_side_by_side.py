"""The demo's target runs side by side: at most `slots` at a time, each one's console shown
whole and in the demo's order, its own wall clock, its exit status; stop() leaves none running."""

from __future__ import annotations

import os
import sys
import time

import pytest

from launcher.demo.side_by_side import TAIL_NICE, SideBySide

pytestmark = pytest.mark.unit


def fake_pool(tmp_path, slots, scripts):
    """A pool whose runs are `python -c SCRIPT` children (scripts by label) in tmp dirs."""
    def prepare(label):
        run_dir = tmp_path / label
        run_dir.mkdir()
        return run_dir, f"prepared {label}\n"

    def command(run_dir):
        return [sys.executable, "-c", scripts[run_dir.name]]
    return SideBySide(slots, prepare=prepare, command=command)


class Console:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def lines(label, n, pause):
    return (f"import time, sys\nfor i in range({n}):\n    print('{label}', i, flush=True)\n"
            f"    time.sleep({pause})\n")


def test_runs_at_most_slots_at_a_time_and_show_each_console_in_order(tmp_path):
    scripts = {"a": lines("a", 3, 0.3), "b": lines("b", 3, 0.1), "c": lines("c", 2, 0.05)}
    pool = fake_pool(tmp_path, 2, scripts)
    runs = [pool.add(label, label) for label in "abc"]
    assert [r.proc is not None for r in runs] == [True, True, False]  # c waits for a slot
    out = Console()
    assert [pool.follow(r, out) for r in runs] == [0, 0, 0]
    assert out.text == "".join(f"prepared {x}\n" + "".join(f"{x} {i}\n" for i in range(n))
                               for x, n in (("a", 3), ("b", 3), ("c", 2)))
    a, b, c = runs
    assert c.started >= b.ended  # c started when b's slot freed, not when a was followed
    assert c.started < a.ended
    assert b.seconds < a.seconds  # each run's own wall clock, timed as it ended
    assert 0.25 <= b.seconds < a.seconds


def test_a_run_ending_while_nobody_polls_is_timed_when_it_ended(tmp_path):
    pool = fake_pool(tmp_path, 1, {"quick": "print('done')"})
    run = pool.add("quick", "quick")
    time.sleep(1.0)  # the demo busy with the source run
    assert pool.follow(run, Console()) == 0
    assert run.seconds < 0.8


def test_exit_status_and_stop(tmp_path):
    scripts = {"bad": "import sys; print('oops'); sys.exit(3)",
               "long": "import time; time.sleep(60)"}
    pool = fake_pool(tmp_path, 2, scripts)
    bad, long = pool.add("bad", "bad"), pool.add("long", "long")
    out = Console()
    assert pool.follow(bad, out) == 3 and "oops" in out.text
    t0 = time.monotonic()
    pool.stop()
    assert long.proc is not None and long.proc.poll() is not None  # stopped, not left behind
    assert time.monotonic() - t0 < 10


def test_a_run_added_nicer_runs_at_a_lower_cpu_priority_and_so_do_its_children(tmp_path):
    """The demo's early run (from scratch, beside the source run every other run waits for)."""
    child = ("import os, subprocess, sys; print(os.getpriority(os.PRIO_PROCESS, 0), "
             "subprocess.run([sys.executable, '-c', 'import os; print(os.getpriority("
             "os.PRIO_PROCESS, 0))'], capture_output=True, text=True).stdout.strip(), flush=True)")
    pool = fake_pool(tmp_path, 2, {"early": child, "plain": child})
    early, plain = pool.add("early", "early", nice=7), pool.add("plain", "plain")
    out = Console()
    assert pool.follow(early, out) == 0 and pool.follow(plain, out) == 0
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert out.text.splitlines()[1::2] == [f"{min(mine + 7, 19)} {min(mine + 7, 19)}",
                                           f"{mine} {mine}"]


# a stand-in worker: best.ckpt, then rank 0's progress record at FINISHING, then its last
# seconds (the closing lines and pictures) before it ends
FINISHES_THEN_DRAWS = """
import os, sys, time
from pathlib import Path
from launcher.core.rundir.names import BEST_CKPT
from launcher.core.rundir.progress import Progress, Stage, write_progress
run_dir = Path.cwd() / sys.argv[1]
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0.3)
(run_dir / BEST_CKPT).write_bytes(b"weights")
write_progress(run_dir, Progress(rank=0, pid=os.getpid(), attempt=1, seq=1, time=time.time(),
                                 stage=Stage.FINISHING))
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[3]))
"""


def test_a_run_is_final_at_its_workers_finishing_stage_and_follow_looks_meanwhile(
        tmp_path, monkeypatch):
    """What the demo starts its export on: every target run's results final, the last run's
    closing lines and pictures still to come."""
    monkeypatch.chdir(tmp_path)

    def prepare(label):
        (tmp_path / label).mkdir()
        return tmp_path / label, ""
    args = {"ends": ["0.2", "0"], "fails": ["0.2", "3"], "draws": ["1.2", "0"]}
    pool = SideBySide(3, prepare=prepare, command=lambda run_dir: [
        sys.executable, "-c", FINISHES_THEN_DRAWS, run_dir.name, *args[run_dir.name]])
    ends, fails, draws = (pool.add(label, label) for label in ("ends", "fails", "draws"))
    assert not any(r.final for r in (ends, fails, draws))  # started, nothing written yet
    seen: list[tuple[bool, bool]] = []
    assert pool.follow(ends, Console(), meanwhile=lambda: seen.append(
        (draws.final, draws.ended is None))) == 0
    assert ends.final and seen and seen[0] == (False, True)
    assert pool.follow(fails, Console()) == 3
    assert not fails.final  # best.ckpt and FINISHING, then a failure: not final
    assert pool.follow(draws, Console(), meanwhile=lambda: seen.append(
        (draws.final, draws.ended is None))) == 0
    assert (True, True) in seen  # final while still running (its last 1.2 s)
    assert draws.final


def test_the_last_seconds_of_a_run_whose_results_are_final_yield_while_another_still_trains(
        tmp_path, monkeypatch):
    """Its closing lines and pictures hold up nobody while another run still trains: they go on
    at a lower priority. The last run's do not: the demo ends after them."""
    monkeypatch.chdir(tmp_path)

    def prepare(label):
        (tmp_path / label).mkdir()
        return tmp_path / label, ""
    pre = {"first": "0.3", "last": "2.3"}  # seconds before each is final
    pool = SideBySide(2, prepare=prepare, command=lambda run_dir: [
        sys.executable, "-c", FINISHES_THEN_DRAWS, run_dir.name, "1", "0", pre[run_dir.name]])
    first, last = pool.add("first", "first"), pool.add("last", "last")
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, list[tuple[bool, int]]] = {"first": [], "last": []}

    def look():
        for run in (first, last):
            if run.ended is None and run.proc is not None:
                try:
                    nice = os.getpriority(os.PRIO_PROCESS, run.proc.pid)
                except OSError:  # ended between the two looks
                    continue
                seen[run.label].append((run.final, nice))
    assert pool.follow(first, Console(), meanwhile=look) == 0
    assert pool.follow(last, Console(), meanwhile=look) == 0
    for label in ("first", "last"):
        before = [nice for final, nice in seen[label] if not final]
        assert before and set(before) == {mine}, (label, seen[label])
    # (the first look may come between its FINISHING and the poll that saw it)
    after = [nice for final, nice in seen["first"] if final]
    assert len(after) > 2 and set(after[1:]) == {max(mine, TAIL_NICE)}, seen["first"]
    after = [nice for final, nice in seen["last"] if final]
    assert len(after) > 2 and set(after) == {mine}, seen["last"]
