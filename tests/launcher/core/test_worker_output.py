"""MindSpore's own INFO/WARNING lines go to the logs only; the console shows packrun's and the
tutorial's lines (and MindSpore's errors)."""

import io
import sys

import pytest

from launcher.core.logtail import LogFollower
from launcher.core.worker_output import ChatterFilter, filter_lines, is_chatter
from launcher.supervise.processes import run_streaming

pytestmark = pytest.mark.unit

INFO = ("[INFO] DISTRIBUTED(25038,7f7345ffb6c0,python):2026-12-01-21:03:10.551.243 [mindspore/"
        "ccsrc/cluster/rpc/core/communicator/tcp_client.cc:367] Start] Event base dispatch "
        "success!")
WARN = ("[WARNING] ME(1234,7f00aa,python):2026-12-01-21:03:10.551.243 [mindspore/ccsrc/x.cc:1] "
        "F] something")
ERROR = "[ERROR] ME(1234,7f00aa,python):2026-12-01-21:03:10.551.243 [x.cc:1] F] it broke"
OURS = ["Epoch 1/2", "----------", "train Loss: 0.5", "[rank 0] a line of our own",
        "End training, the best acc is: 1.0, the best acc epoch is 1"]


def test_chatter_is_recognised_and_errors_pass():
    assert is_chatter(INFO) and is_chatter(WARN)
    assert not is_chatter(ERROR)
    assert not any(is_chatter(line) for line in OURS)
    text = "\n".join([OURS[0], INFO, OURS[1], WARN, ERROR]) + "\n"
    assert filter_lines(text) == "\n".join([OURS[0], OURS[1], ERROR]) + "\n"


def test_chunked_filter_keeps_progress_live_and_drops_split_chatter():
    f = ChatterFilter()
    assert f.feed("\r  epoch 1/2 step 3/9") == "\r  epoch 1/2 step 3/9"  # live, no newline
    out = f.feed("\n" + INFO[:30]) + f.feed(INFO[30:] + "\nEpoch 2/2\n")
    assert out == "\nEpoch 2/2\n"
    assert f.feed("[rank 0] hello") + f.flush() == "[rank 0] hello"


def test_debug_console_drops_chatter_and_the_log_keeps_it(tmp_path):
    code = ("import sys\n"
            f"print({OURS[0]!r}); print({INFO!r}); print({WARN!r}); print({ERROR!r})\n"
            f"sys.stdout.write({OURS[4]!r})\n")
    console = io.StringIO()
    log = tmp_path / "worker_0.log"
    assert run_streaming([sys.executable, "-c", code], log, console=console) == 0
    assert console.getvalue() == f"{OURS[0]}\n{ERROR}\n{OURS[4]}"
    assert INFO in log.read_text() and WARN in log.read_text()


def test_the_log_follower_of_run_and_submit_wait_drops_chatter(tmp_path):
    # one follower (launcher/core/logtail.py) streams rank 0's log for `run` and `submit --wait`
    from launcher.slurm import client as slurm
    from launcher.supervise import supervisor as supervise
    assert slurm.LogFollower is supervise.LogFollower is LogFollower
    log = tmp_path / "worker_0.log"
    log.write_text(f"{OURS[0]}\n{INFO}\n{WARN}\n{OURS[4]}")
    out = io.StringIO()
    follower = LogFollower(log, out)
    follower.poll()
    assert out.getvalue() == f"{OURS[0]}\n"            # the unfinished last line waits
    follower.poll(final=True)
    assert out.getvalue() == f"{OURS[0]}\n{OURS[4]}"


def test_counts_read_as_english():
    from src.train import counted
    assert (counted(1, "step"), counted(36, "step"), counted(1, "epoch")) == \
        ("1 step", "36 steps", "1 epoch")
