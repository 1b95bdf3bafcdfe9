"""`packrun --help` and `packrun CMD --help` for every command: usage with the README's hyphenated
names, the command's own flags, a pointer to `packrun keys`; no pager, no fire banner, exit 0.
And a command's on/off flags read text as the spec reads bools (`--wait=false` is off)."""

import inspect
import os
import pty
import re
import subprocess
import sys

import fire
import pytest

from launcher.cli import main as cli
from launcher.cli.help import commands
from launcher.cli.main import Commands
from tests.helpers import REPO, packrun, packrun_argv, packrun_env

pytestmark = pytest.mark.unit

NAMES = list(commands(Commands))


def packrun_on_a_tty(*args, tmp_path):
    """Run the CLI with stdout on a pseudo-terminal (where fire would page) and a PAGER that
    leaves a mark if it is ever started."""
    mark = tmp_path / "pager-ran"
    master, slave = pty.openpty()
    env = packrun_env(env_extra={"PAGER": f"touch {mark}; cat", "TERM": "xterm"})
    p = subprocess.Popen(packrun_argv(*args), stdout=slave, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=env, cwd=tmp_path)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    rc = p.wait(timeout=60)
    os.close(master)
    return rc, out.decode().replace("\r\n", "\n"), p.stderr.read().decode(), mark.exists()


def test_command_names_are_the_readmes():
    readme = (REPO / "README.md").read_text()
    for name in ("show-batch", "merge-rank-tables", "node-launch", "rank-table"):
        assert name in NAMES and f"packrun {name}" in readme
    assert not [n for n in NAMES if "_" in n]


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["help"]])
def test_top_level_help(tmp_path, argv):
    rc, out, err, paged = packrun_on_a_tty(*argv, tmp_path=tmp_path)
    assert rc == 0 and not paged, (rc, out, err)
    assert out.startswith("usage: packrun COMMAND")
    assert "INFO" not in out + err and "Showing help" not in out + err
    for name in NAMES:
        assert f"\n  {name} " in out, name
    assert "packrun keys" in out and "show_batch" not in out


@pytest.mark.parametrize("name", NAMES)
def test_every_command_has_help(tmp_path, name):
    rc, out, err, paged = packrun_on_a_tty(name, "--help", tmp_path=tmp_path)
    assert rc == 0 and not paged, (rc, out, err)
    assert out.startswith(f"usage: packrun {name}"), out
    assert "INFO" not in out + err and "error" not in err
    params = inspect.signature(inspect.unwrap(getattr(Commands, name.replace("-", "_"))))
    for p in params.parameters.values():
        if p.kind is p.KEYWORD_ONLY or (p.default is not p.empty
                                        and p.name not in ("job", "run_dir")):
            assert f"--{p.name}" in out, (name, p.name)
    assert "packrun keys" in out


def test_help_wins_over_missing_job_and_underscored_names_still_work(tmp_path):
    for argv in (["debug", "--help"], ["run", "-h"], ["show_batch", "--help"],
                 ["render", "--", "--help"],  # what fire's usage error suggests
                 ["debug", "jobs/none.toml", "--epochs=2", "--help"]):
        rc, out, err, _ = packrun_on_a_tty(*argv, tmp_path=tmp_path)
        assert rc == 0 and "give a job file" not in err and out.startswith("usage: packrun "), argv
    rc, out, _, _ = packrun_on_a_tty("show_batch", "--help", tmp_path=tmp_path)
    assert out.startswith("usage: packrun show-batch")
    r = packrun("rank_table", "--devices=0", "--server_ip=10.0.0.1", "--device_ips=10.1.0.1",
                f"--out={tmp_path / 't.json'}", timeout=60)
    assert r.returncode == 0 and (tmp_path / "t.json").exists(), r.stderr


def test_unknown_command_exits_2_naming_the_commands(tmp_path):
    r = packrun("sumbit", timeout=60)
    assert r.returncode == 2 and "unknown command 'sumbit'" in r.stderr
    assert "submit" in r.stderr and "Traceback" not in r.stderr


# --- on/off flags given as text ----------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("--wait", True), ("--wait=true", True), ("--wait=false", False), ("--wait=False", False),
    ("--wait=0", False), ("--wait=yes", True), ("--wait=no", False)])
def test_bool_flags_read_text_as_the_spec_does(monkeypatch, text, expected):
    seen = {}
    import launcher.slurm.submit
    monkeypatch.setattr(launcher.slurm.submit, "submit_command",
                        lambda job, overrides, wait, out: seen.setdefault("wait", wait) and 0)
    with pytest.raises(SystemExit):
        fire.Fire(Commands(), command=["submit", "job.toml", text], name="packrun")
    assert seen["wait"] is expected


@pytest.mark.parametrize("command, module, function, flag, keyword", [
    ("render", "launcher.render.artifacts", "render_command", "print", "print_only"),
    ("render", "launcher.render.artifacts", "render_command", "slurm", "slurm"),
    ("demo", "launcher.demo.main", "run_demo", "quick", "quick"),
])
def test_every_on_off_flag_is_parsed(monkeypatch, command, module, function, flag, keyword):
    import importlib
    seen = []
    monkeypatch.setattr(importlib.import_module(module), function,
                        lambda *a, **kw: seen.append(kw[keyword]) or 0)
    for text, expected in ((f"--{flag}=false", False), (f"--{flag}", True)):
        argv = [command] + (["job.toml"] if command == "render" else []) + [text]
        try:
            fire.Fire(Commands(), command=argv, name="packrun")
        except SystemExit:
            pass
        assert seen[-1] is expected, (command, text)


def test_a_bool_flag_with_a_typo_is_a_user_error(capsys):
    with pytest.raises(SystemExit) as e:
        fire.Fire(Commands(), command=["demo", "--quick=ture"], name="packrun")
    assert e.value.code == 2
    assert "--quick='ture': give --quick (on) or --quick=false" in capsys.readouterr().err
    assert cli.flag("x", "FALSE") is False


def test_every_job_file_the_help_names_exists():
    from launcher.core.paths import REPO
    main = (REPO / "launcher" / "cli" / "main.py").read_text()
    named = set(re.findall(r"\b(jobs/[\w.-]+\.toml)\b", main))
    assert named and sorted(n for n in named if not (REPO / n).is_file()) == []


def test_help_loads_neither_fire_nor_asyncio():
    """Help is answered before fire runs: `packrun CMD --help` starts without fire's imports
    (fire.core loads asyncio), most of what a command's start costs beyond the interpreter."""
    code = ("import sys; from launcher.cli.main import run; "
            "assert run(['debug', '--help']) == 0; "
            "print(sorted(m for m in ('fire', 'asyncio') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], env=packrun_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[]", r.stdout
