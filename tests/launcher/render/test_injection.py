"""No job value can run as a command: every string key, given hostile text, is either refused at
validation (naming the key) or rendered through the quoting filter. Every template is rendered
with it, every script must pass `bash -n` and shellcheck, and the scripts then run with stub
launchers (python, mpirun, srun, scontrol) that record their argv: nothing hostile executes, and
the workers receive the run directory exactly as it was spelled.

env_setup is the one key rendered verbatim as shell (by design, README "Site customisation");
for it only the newline is tested (refused)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from launcher.core.errors import UserError
from launcher.core.rundir.job_json import spec_to_json
from launcher.core.spec import JobSpec, build_spec
from launcher.render import artifacts as render
from launcher.render import shellsafe
from tests.helpers import need_tool

MARK = "PWNED"


def payloads(marker: Path) -> list[str]:
    """Hostile text, each with an absolute marker path and with a relative one (which has no
    '/', so that a rule against '/' alone cannot refuse it)."""
    out = []
    for m in (str(marker), MARK):
        out += [f"x\ntouch {m}\n#", f"x\rtouch {m}", f"$(touch {m})", f"`touch {m}`",
                f"x;touch {m}", f"x' ; touch {m} ; '", f"x\" ; touch {m} ; \"", f"x && touch {m}",
                f"x|touch {m}", f"x>{m}", f"x\\\"$(touch {m})", f"x)$(touch {m})"]
    return out + ["x}", "${x:?}}", "{{ 7 * 7 }}", "-x", "a b", "x\x00y", "\u2028", "x\ty"]


STRING_KEYS = [n for n, f in JobSpec.fields().items() if f.type == "str"]
CHOICE_KEYS = [n for n in STRING_KEYS if JobSpec.fields()[n].metadata["choices"]]
FREE_KEYS = [n for n in STRING_KEYS if n not in CHOICE_KEYS]

# Launch configurations: every template is rendered by at least one.
VARIANTS = {
    "msrun-1": dict(cards_per_node=2),
    "msrun-2": dict(nodes=2, hosts="localhost,127.0.0.1", master_port=8118),
    "slurm-2": dict(nodes=2, hosts="n[1-2]", partition="p", account="a", qos="q",
                    time="1:00:00", gres="gpu:1", sbatch_extra=["--comment=ok"]),
    "mpirun-cpu": dict(launcher="mpirun", cards_per_node=2, cluster_timeout=10),
    "mpirun-gpu": dict(launcher="mpirun", device="GPU", cards_per_node=2),
    "rank_table-2": dict(launcher="rank_table", device="Ascend", nodes=2, cards_per_node=2,
                         hosts="10.0.0.[1-2]", device_ips="10.1.0.1,10.1.0.2,10.1.0.3,10.1.0.4",
                         master_port=8118),
}


def stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


# The stub scheduler of mpirun.sh on CPU (MS_ROLE=MS_SCHED): it listens where mpi_task.sh's rank
# waits for it and ends once that rank has connected (or after 10 s), so that the rank goes on
# to start its worker (the stub python, which records its argv) within a poll or two, instead
# of waiting out cluster_timeout for a port that never opens (0.5-1.2 s a payload with
# cluster_timeout = 1, most of a key's wall time when payloads ran one at a time).
SCHEDULER = ("import os, socket; s = socket.create_server((os.environ['MS_SCHED_HOST'], "
             "int(os.environ['MS_SCHED_PORT']))); s.settimeout(10); s.accept()")


def make_stubs(tmp_path: Path) -> tuple[Path, Path]:
    """<tmp_path>/stubbin with mpirun, srun and scontrol stubs, and a python stub that records
    argv (one word per line) in <tmp_path>/argv.log but runs the real interpreter for `-c` (the
    free-port snippet) and, as MindSpore's scheduler, listens for the ranks (SCHEDULER);
    (the directory, the log)."""
    bin_dir = tmp_path / "stubbin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "argv.log"
    record = f'printf "%s\\n" "$(basename "$0")" "$@" >> {shellsafe.sh(log)}\n'
    python = shellsafe.sh(sys.executable)
    stub(bin_dir / "python", f'if [ "$1" = -c ] || [ "$1 ${{2%%.*}}" = "-m launcher" ]; then '
                             f'exec {python} "$@"; fi\n{record}'
                             f'if [ "${{MS_ROLE:-}}" = MS_SCHED ]; then '
                             f'exec {python} -c {shellsafe.sh(SCHEDULER)}; fi\n')
    stub(bin_dir / "mpirun", record + 'last="${*: -1}"\ncase "$last" in *mpi_task.sh) '
         'OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=1 bash "$last";; esac\nexit 0\n')
    stub(bin_dir / "srun", record + 'while [ "${1#--}" != "$1" ]; do shift; done\n'
         'SLURM_NODEID=0 "$@"\n')
    stub(bin_dir / "scontrol", 'printf "n1\\nn2\\n"\n')
    # the allocation's hosts resolve to a network address (a loopback master is refused)
    stub(bin_dir / "getent", 'case "$2" in n[0-9]) echo "10.0.0.${2#n} STREAM $2";; '
         '*) exec /usr/bin/getent "$@";; esac\n')
    return bin_dir, log


def hostile_values(key: str, text: str) -> dict:
    if key == "sbatch_extra":
        return {key: ["--comment=" + text]}
    if key == "env_setup":
        return {key: [text]}
    if key == "env":
        return {key: {"X": text}}
    if key == "env:name":
        return {"env": {text: "1"}}
    return {key: text}


def render_or_refuse(values: dict, tmp: Path, slurm: bool, python: Path, tag: str):
    """(None, reason) when refused, else (run_dir, artifacts)."""
    data = tmp / "data"
    try:
        spec = build_spec(values, source="job", base_dir=tmp, check_paths=False)
        if spec.template_dir:
            Path(spec.template_dir).mkdir(parents=True, exist_ok=True)
        run_dir = Path(spec.output_dir) / f"{spec.name}-20260101-000000-{tag}"
        arts = render.render_artifacts(spec, run_dir, slurm=slurm, python=str(python))
    except UserError as e:
        return None, str(e)
    assert data.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    # the spec, which the node verbs read (job.sbatch's batch program: launcher/node/batch.py)
    (run_dir / "job.json").write_text(spec_to_json(spec))
    for rel, text in arts.items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text(text)
    return run_dir, arts


def run_scripts(run_dir: Path, arts: dict, variant: str, bin_dir: Path, tmp: Path) -> list:
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="1",
               SLURM_JOB_NODELIST="n[1-2]", SLURM_NODEID="0")
    script = "job.sbatch" if "job.sbatch" in arts else \
        next(f for f in ("msrun.sh", "mpirun.sh", "rank_table.sh") if f in arts)
    # two-node scripts: with the node argument, and without it (the usage message expands)
    args = [["0"], []] if variant in ("msrun-2", "rank_table-2") else [[]]
    outcome = []
    for arg in args:
        r = subprocess.run(["bash", str(run_dir / script), *arg], env=env, cwd=tmp,
                           capture_output=True, text=True, timeout=60)
        outcome += [script, arg, r.returncode, r.stderr[-300:]]
    return outcome


def lint(paths: list[Path]) -> None:
    """bash -n each script, then shellcheck all of them in one call (it starts slowly)."""
    for path in paths:
        r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, f"bash -n {path}:\n{r.stderr}"
    for shell in ("bash", "sh"):
        group = [str(p) for p in paths if (p.name == "python") == (shell == "sh")]
        if group:
            r = subprocess.run(["shellcheck", "-s", shell, *group], capture_output=True,
                               text=True)
            assert r.returncode == 0, f"shellcheck:\n{r.stdout}{r.stderr}"


# Keys whose hostile values render (quoted), so that every launch script of every variant runs
# with the stubs for each payload: half a minute per key (payloads side by side), the e2e tier.
# The keys whose hostile values are refused at validation take a second: unit. The others
# render some of them and run the scripts with the stubs (seconds): e2e.
RENDERS_HOSTILE = {"train_dir", "val_dir", "output_dir", "pretrained", "hccn_conf", "template_dir",
                   "env", "sbatch_extra", "ssh", "device_ips"}


def same_script(text: str, tmp: Path, tag: str) -> str:
    """The script with what differs between payloads for reasons of the test alone (each
    payload's own directory, its run directory's tag) made equal, so that scripts which the
    hostile text did not reach (a key that only job.json holds) are linted once, not once per
    payload; a script holding the hostile text stays distinct."""
    return text.replace(str(tmp), "/PAYLOAD").replace(tag, "-TAG")


def try_payload(key: str, n: int, tmp: Path) -> tuple[int, list[tuple[Path, str]]]:
    """Payload `n` for `key` in every variant, in its own directory `tmp` (its data, stubs,
    argv log, run directories and marker path, so that payloads can run side by side): each
    is refused naming the key, or renders, runs with the stubs and executes nothing.
    (how many rendered, the scripts to lint with their same_script text)."""
    bin_dir, log = make_stubs(tmp)
    marker = tmp / MARK
    text = payloads(marker)[n]
    data = tmp / "data"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (data / split / cls).mkdir(parents=True, exist_ok=True)
    base = dict(name="inj", train_dir=str(data / "train"), val_dir=str(data / "val"),
                output_dir=str(tmp / "runs"))
    rendered, scripts = 0, []
    for variant, keys in VARIANTS.items():
        values = base | keys | hostile_values(key, text)
        if key == "sbatch_extra":
            values["sbatch_extra"] = [*keys.get("sbatch_extra", []), *values[key]]
        run_dir, arts = render_or_refuse(values, tmp, variant.startswith("slurm"),
                                         bin_dir / "python", f"{variant}-{n}")
        if run_dir is None:
            name = key.split(":")[0]
            assert f"'{name}'" in arts or "run directory" in arts or "template" in arts, arts
            continue
        rendered += 1
        scripts += [(run_dir / rel, same_script(arts[rel], tmp, f"-{variant}-{n}"))
                    for rel in arts if rel.endswith((".sh", ".sbatch", "python"))]
        outcome = run_scripts(run_dir, arts, variant, bin_dir, tmp)
        ran = [p for p in tmp.rglob(MARK) if not p.is_dir()]  # paths make dirs
        assert not ran, f"{key}={text!r} ({variant}) executed: {ran} {outcome}"
        # the worker (or msrun) got the run directory as one word, exactly: under mpirun on CPU
        # both the scheduler and the rank that connected to it (make_stubs' SCHEDULER)
        if log.exists():
            words = log.read_text().splitlines()
            assert str(run_dir) in words, (variant, outcome)
            if variant == "mpirun-cpu":
                assert words.count(str(run_dir)) == 2, (variant, outcome, words)
            log.unlink()
    return rendered, scripts


@pytest.mark.parametrize("key", [
    pytest.param(key, marks=pytest.mark.e2e if key in RENDERS_HOSTILE else pytest.mark.unit)
    for key in [*FREE_KEYS, "env", "env:name", "env_setup", "sbatch_extra"]])
def test_hostile_value_is_refused_or_inert(key, tmp_path):
    need_tool("shellcheck", "to lint every script a hostile value renders")
    todo = [n for n, text in enumerate(payloads(tmp_path / MARK))
            if key != "env_setup" or any(c in text for c in "\n\r\x00\u2028")]  # else verbatim
    # The payloads run side by side: most of a launch script's time with stub launchers is its
    # waits (a poll of the stub ranks, a scheduler port that never opens), not CPU.
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda n: try_payload(key, n, tmp_path / f"payload{n}"), todo))
    ran = [p for p in tmp_path.rglob(MARK) if not p.is_dir()]  # wherever a payload reached
    assert not ran, f"{key}: executed: {ran}"
    rendered = sum(r for r, _ in done)
    distinct = {text: path for _, scripts in done for path, text in scripts}
    lint(sorted(distinct.values()))
    if key in ("train_dir", "val_dir", "output_dir", "pretrained", "hccn_conf", "template_dir",
               "env"):
        assert rendered, f"{key}: free text is quoted, so some hostile value must render"


@pytest.mark.unit
@pytest.mark.parametrize("key", FREE_KEYS)
def test_every_string_key_has_a_rule(key):
    """A string key reaches scripts quoted (paths) or bare under a grammar: no third kind."""
    f = JobSpec.fields()[key]
    assert f.metadata["grammar"] or f.metadata["path"] or key == "hccn_conf", \
        f"{key}: declare a grammar (launcher/core/spec.py) or make it a path"


@pytest.mark.unit
def test_every_template_value_passes_the_guard(tmp_path):
    """The guard is the templates' finalize: a bare value that is not a plain word cannot be
    written, in any template, packrun's or a site's."""
    env = render.environment()
    assert env.finalize is shellsafe.finalize
    t = env.from_string("# run {{ x }}\n")
    assert t.render(x="ok-1.2") == "# run ok-1.2\n"
    for bad in ("a b", "x\ny", "$(id)", "a'b", "n[1-2]"):
        with pytest.raises(shellsafe.UnsafeValue):
            t.render(x=bad)
    assert env.from_string("{{ x | sh }}").render(x="a b") == "'a b'"
    with pytest.raises(shellsafe.UnsafeValue):
        env.from_string("{{ x | sh }}").render(x="a\nb")
    with pytest.raises(shellsafe.UnsafeValue):
        env.from_string("#SBATCH --x={{ x | sbatch }}").render(x='a"b')
    site = tmp_path / "site"
    site.mkdir()
    (site / "msrun.sh.j2").write_text("#!/bin/bash\n# {{ run_dir }}\n")
    spec = build_spec(dict(train_dir="/d/t", val_dir="/d/v", template_dir=str(site)),
                      check_paths=False)
    with pytest.raises(shellsafe.UnsafeValue):
        render.render_artifacts(spec, "/runs/a b")


@pytest.mark.unit
def test_quoting_round_trips_through_bash(tmp_path):
    for text in ["plain", "a b", "$(touch x)", "`x`", "a'b", 'a"b', "a\\b", "\\$", "{{ }}",
                 "}", "~root", "*", "!x", "é ü"]:
        r = subprocess.run(["bash", "-c", f"printf %s {shellsafe.sh(text)}"], cwd=tmp_path,
                           capture_output=True, text=True)
        assert r.stdout == text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_the_variants_render_every_template(tmp_path):
    """The hostile test above covers every launch template: each is rendered by a variant."""
    seen = set()
    for variant, keys in VARIANTS.items():
        values = dict(train_dir="/d/t", val_dir="/d/v", output_dir=str(tmp_path)) | keys
        spec = build_spec(values, check_paths=False)
        seen |= set(render.render_artifacts(spec, tmp_path / "r", slurm="slurm" in variant))
    outputs = {"msrun.sh.j2": "msrun.sh", "python_shim.j2": "bin/python",
               "job.sbatch.j2": "job.sbatch", "rank_table.sh.j2": "rank_table.sh",
               "mpirun.sh.j2": "mpirun.sh", "hostfile.j2": "hostfile",
               "mpi_task.sh.j2": "mpi_task.sh", "site_setup.sh.j2": "msrun.sh",
               # included pieces: rendered inside the scripts that include them
               "_wait_port.sh.j2": "mpi_task.sh",
               "_master_addr.sh.j2": "mpirun.sh"}
    # (job_array.sbatch.j2 is rendered by `packrun sweep --slurm` through the same guarded
    # environment, launcher/sweep/array.py; tests/launcher/sweep/test_sweep.py renders, lints
    # and runs it)
    templates = {p.name for p in render.TEMPLATES.glob("*.j2")} - {"report.html.j2",
                                                                    "job_array.sbatch.j2"}
    assert templates <= set(outputs), f"new template(s) {templates - set(outputs)}: add a variant"
    assert {outputs[t] for t in templates} <= seen
