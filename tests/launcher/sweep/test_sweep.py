"""`packrun sweep`, `render --sweep`, `sweep-report` / `report SWEEP_DIR` (launcher/sweep/plan.py,
launcher/sweep/array.py, launcher/sweep/report.py).

Unit tests plan sweeps over job files whose folders exist (nothing trains); the e2e tests run a
2 x 2 grid (lr x mode) of a tiny job for real; the cluster tests submit it as one Slurm job array
to the test cluster (tests/cluster/slurm_up.sh) and cancel one.
"""

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from launcher.core.errors import UserError
from launcher.core.rundir.metrics import best_row, read_metrics
from launcher.core.rundir.names import SWEEP_JSON, TB_DIR
from launcher.core.rundir.sweepdir import read_sweep
from launcher.sweep.plan import (
    parse_grid,
    plan_sweep,
    read_points_file,
    repeated_flag,
)
from tests.helpers import (
    REPO,
    batch_step_succeeded,
    float32,
    need_tool,
    packrun,
    packrun_argv,
    packrun_env,
    packrun_in_process,
    shown,
    tensorboard_events,
    wait_for,
    write_tiny_job,
)

GRID = ["--grid", "lr=0.01,0.001", "--grid", "mode=finetune,fixed_feature"]
DIRS = {"lr=0.01_mode=finetune", "lr=0.01_mode=fixed_feature", "lr=0.001_mode=finetune",
        "lr=0.001_mode=fixed_feature"}


def sweep_dir_of(text: str) -> Path:
    m = re.search(r"sweep directory (\S+)$", text, re.M)
    assert m, text[-3000:]
    return Path(m.group(1))


def summary_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """{(lr, mode): the summary row's cells} from the table printed after the sweep."""
    table = text[text.index("\nlr "):]
    rows = {}
    for line in table.strip("\n").splitlines()[2:]:
        cells = line.split()
        if len(cells) < 7 or cells[0].startswith("*"):
            break
        rows[(cells[0], cells[1])] = cells
    return rows


def check_summary(text: str, sweep_dir: Path) -> None:
    """Four rows, best first, whose accuracies are those of each run's metrics.jsonl."""
    rows = summary_rows(text)
    assert len(rows) == 4, text
    accs = []
    for (lr, mode), cells in rows.items():
        run_dir = sweep_dir / f"lr={lr}_mode={mode}"
        metrics = read_metrics(run_dir)
        best = best_row(metrics)
        state, best_acc, *rest = cells[2:]
        if rest[0] == "*":
            rest = rest[1:]
        best_epoch, last_acc = rest[0], rest[1]
        assert state == "completed", cells
        assert float(best_acc) == pytest.approx(best["val_acc"], abs=5e-5)
        assert int(best_epoch) == best["epoch"]
        assert float(last_acc) == pytest.approx(metrics[-1]["val_acc"], abs=5e-5)
        accs.append(float(best_acc))
    assert accs == sorted(accs, reverse=True)  # sorted by best accuracy
    first = next(iter(rows.values()))
    assert " *" in next(line for line in text.splitlines() if line.split()[:2] == first[:2])


# =============================================================================================
# Unit: points, validation, naming (nothing runs)
# =============================================================================================

@pytest.mark.unit
def test_grid_flags_are_collected_although_fire_keeps_only_the_last():
    argv = ["sweep", "j.toml", "--grid", "lr=1,2", "--grid=mode=a,b", "--epochs=2"]
    assert repeated_flag(argv, "grid") == ["lr=1,2", "mode=a,b"]
    assert parse_grid(["lr=1,2", "mode=a,b"]) == {"lr": ["1", "2"], "mode": ["a", "b"]}
    for bad in ("lr", "lr=", "=1,2", "lr=1,,2"):
        with pytest.raises(UserError, match="--grid"):
            parse_grid([bad])
    with pytest.raises(UserError, match="given twice"):
        parse_grid(["lr=1", "lr=2"])


@pytest.mark.unit
def test_the_cross_product_names_each_directory_by_the_keys_that_differ(make_job):
    job = make_job(epochs=3)
    plan = plan_sweep(str(job), {}, ["lr=0.01,0.001", "mode=finetune,fixed_feature",
                                     "epochs=3"], None, how="debug", parallel=None, check=False)
    assert [p.name for p in plan.points] == ["lr=0.01_mode=finetune",
                                            "lr=0.01_mode=fixed_feature",
                                            "lr=0.001_mode=finetune",
                                            "lr=0.001_mode=fixed_feature"]
    assert plan.keys == ["lr", "mode"]         # epochs=3 is every point's value: not a difference
    assert [(p.spec.lr, p.spec.mode) for p in plan.points][1] == (0.01, "fixed_feature")
    assert plan.parallel == 1


@pytest.mark.unit
def test_a_sweep_table_in_the_job_file_and_a_points_file(make_job, tmp_path):
    job = make_job()
    job.write_text(job.read_text() + '[sweep]\nlr = [0.1, 0.2]\nhflip = [true, false]\n')
    plan = plan_sweep(str(job), {}, [], None, how="debug", parallel=None, check=False)
    assert [(p.spec.lr, p.spec.hflip) for p in plan.points] == [
        (0.1, True), (0.1, False), (0.2, True), (0.2, False)]
    assert plan.points[1].name == "lr=0.1_hflip=false"
    # --grid replaces the table's entry for its key
    plan = plan_sweep(str(job), {}, ["lr=0.5"], None, how="debug", parallel=None, check=False)
    assert [p.spec.lr for p in plan.points] == [0.5, 0.5]
    # a job file with a [sweep] table still runs as one job (the table is ignored)
    from launcher.core.spec import load_job
    assert load_job(job).lr == 0.001

    points = tmp_path / "points.txt"
    points.write_text("# lr and crop together\nlr=0.01 min_crop_scale=0.5\n\n"
                      "--lr=0.1 min_crop_scale=0.3  # a comment\n")
    job2 = make_job(name="plain")
    plan = plan_sweep(str(job2), {}, [], str(points), how="debug", parallel=None, check=False)
    assert [(p.spec.lr, p.spec.min_crop_scale) for p in plan.points] == [(0.01, 0.5), (0.1, 0.3)]
    assert [p.name for p in plan.points] == ["lr=0.01_min_crop_scale=0.5",
                                            "lr=0.1_min_crop_scale=0.3"]
    bad = tmp_path / "bad.txt"
    bad.write_text("lr=0.01\nlr\n")
    with pytest.raises(UserError, match=r"bad.txt:2: 'lr' is not KEY=VALUE"):
        read_points_file(bad)


@pytest.mark.unit
def test_a_bad_value_in_the_last_point_fails_before_anything_is_written(tiny_job):
    runs = Path(tiny_job).parent / "runs"
    # only the last combination is invalid: warmup_epochs must be smaller than epochs
    r = packrun_in_process("sweep", tiny_job, "--grid", "epochs=2,1", "--grid",
                           "warmup_epochs=0,1")
    assert r.returncode == 2, shown(r)
    assert r.stderr.startswith("packrun: error: sweep point 4 of 4 (epochs=1 warmup_epochs=1): ")
    assert "warmup_epochs (1) must be smaller than epochs (1)" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not runs.exists() or not list(runs.iterdir())  # nothing started, nothing written

    points = Path(tiny_job).parent / "points.txt"
    points.write_text("lr=0.01\nlr=0.02\nlr=0.03 mode=fine_tune\n")
    r = packrun_in_process("sweep", tiny_job, f"--points={points}")
    assert r.returncode == 2, shown(r)
    assert "sweep point 3 of 3 (lr=0.03 mode=fine_tune): command line: key 'mode' is " \
           "'fine_tune'; choose one of 'finetune', 'fixed_feature'" in r.stderr
    assert not runs.exists() or not list(runs.iterdir())


@pytest.mark.unit
def test_slurm_points_must_share_one_resource_request(make_job):
    job = make_job(launcher="msrun")
    with pytest.raises(UserError, match=r"sweep point 2 \(cards_per_node=2\).*one job array has "
                                        "one resource request"):
        from launcher.sweep import array as sweep_slurm
        plan = plan_sweep(str(job), {}, ["cards_per_node=1,2"], None, how="slurm",
                          parallel=None, check=False)
        sweep_slurm.check_uniform(plan)


@pytest.mark.unit
def test_render_sweep_slurm_writes_every_point_and_one_array_script(make_job, tmp_path):
    job = make_job(launcher="msrun")
    r = packrun_in_process("render", job, "--sweep", "--slurm", "--grid", "lr=0.1,0.2,0.3",
                           "--parallel=2")
    assert r.returncode == 0, shown(r)
    sweep_dir = Path(r.stdout.split()[-1]).parent
    doc = read_sweep(sweep_dir)
    assert [p["dir"] for p in doc["points"]] == ["lr=0.1", "lr=0.2", "lr=0.3"]
    assert r.stdout.strip() == f"sbatch {sweep_dir / 'job_array.sbatch'}"
    script = (sweep_dir / "job_array.sbatch").read_text()
    assert "#SBATCH --array=0-2%2\n" in script
    assert f"#SBATCH --output={sweep_dir}/slurm-%A_%a.out\n" in script
    for p in doc["points"]:
        assert json.loads((p["path"] / "job.json").read_text())["spec"]["lr"] == \
            float(p["dir"].split("=")[1])
        assert (p["path"] / "job.sbatch").is_file() and (p["path"] / "msrun.sh").is_file()
        assert f"    {p['path']}\n" in script
    subprocess.run(["bash", "-n", sweep_dir / "job_array.sbatch"], check=True)
    need_tool("shellcheck", "to lint the job array script")
    sc = subprocess.run(["shellcheck", sweep_dir / "job_array.sbatch"], capture_output=True,
                        text=True)
    assert sc.returncode == 0, sc.stdout


@pytest.mark.unit
def test_render_sweep_locally_prints_the_command_of_every_point(make_job):
    job = make_job()
    r = packrun_in_process("render", job, "--sweep", "--grid", "lr=0.1,0.2")
    assert r.returncode == 0, shown(r)
    sweep_dir = Path(r.stdout.split()[-1]).parent
    assert r.stdout.splitlines() == [f"packrun debug --resume {sweep_dir / d}"
                                     for d in ("lr=0.1", "lr=0.2")]
    assert sorted(p.name for p in (sweep_dir / "lr=0.1").iterdir()) == ["job.json", "logs"]
    r = packrun_in_process("render", job, "--sweep", "--grid", "lr=0.1,0.2",
                           "--launcher=mpirun", "--cards_per_node=2")
    assert r.returncode == 0, shown(r)
    sweep_dir = Path(r.stdout.split()[-1]).parent
    assert r.stdout.splitlines()[0] == f"packrun run --resume {sweep_dir / 'lr=0.1'}"
    assert (sweep_dir / "lr=0.2" / "mpirun.sh").is_file()


@pytest.mark.unit
def test_an_array_task_runs_its_own_points_job_sbatch(make_job, tmp_path):
    """job_array.sbatch under bash with Slurm's variables: task 1 runs point 1's job.sbatch
    (replaced by a stub that records where it ran), writes the job ids, and sends its output
    to the point's slurm-<job id>.out."""
    job = make_job(launcher="msrun")
    r = packrun_in_process("render", job, "--sweep", "--slurm", "--grid", "seed=1,2,3")
    assert r.returncode == 0, shown(r)
    sweep_dir = Path(r.stdout.split()[-1]).parent
    point = sweep_dir / "seed=2"
    # the point's job id is the task's own: job.sbatch's `scontrol requeue "$SLURM_JOB_ID"`
    # (a stop on request) requeues this task only
    (point / "job.sbatch").write_text('echo "ran $PWD $0 job $SLURM_JOB_ID"\n')
    env = {"PATH": "/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "42",
           "SLURM_ARRAY_JOB_ID": "40"}
    res = subprocess.run(["bash", sweep_dir / "job_array.sbatch"], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (point / "slurm_job_id").read_text() == "42\n"
    assert (sweep_dir / "slurm_job_id").read_text() == "40\n"
    assert (point / "slurm-42.out").read_text() == \
        f"ran {tmp_path} {point / 'job.sbatch'} job 42\n"
    assert not (sweep_dir / "seed=1" / "slurm_job_id").exists()


# =============================================================================================
# End to end: a 2 x 2 grid of a tiny job on this machine
# =============================================================================================

@pytest.mark.e2e
def test_a_2x2_grid_runs_locally_and_summarises(tiny_job):
    r = packrun("sweep", tiny_job, *GRID, "--epochs=1", timeout=1200)
    assert r.returncode == 0, shown(r)
    sweep_dir = sweep_dir_of(r.stdout)
    assert sweep_dir.name.startswith("tiny-sweep-")
    doc = json.loads((sweep_dir / SWEEP_JSON).read_text())
    assert {p["dir"] for p in doc["points"]} == DIRS and doc["keys"] == ["lr", "mode"]
    assert {d.name for d in sweep_dir.iterdir() if d.is_dir()} == DIRS
    for d in DIRS:  # ordinary run directories
        assert (sweep_dir / d / "best.ckpt").is_file()
        assert (sweep_dir / d / "logs" / "worker_0.exit").read_text().strip() == "0"
    mode = json.loads((sweep_dir / "lr=0.001_mode=fixed_feature" / "job.json").read_text())
    assert (mode["spec"]["lr"], mode["spec"]["mode"]) == (0.001, "fixed_feature")
    # the points ran one after another, in order
    starts = [r.stdout.index(f"point {i}/4 ") for i in (1, 2, 3, 4)]
    assert starts == sorted(starts)
    check_summary(r.stdout, sweep_dir)
    check_tensorboard_of_the_sweep(sweep_dir)

    s = packrun("sweep-report", sweep_dir, timeout=300)
    assert s.returncode == 0, shown(s)
    check_summary(s.stdout, sweep_dir)
    report = sweep_dir / "report.html"
    assert s.stdout.strip().endswith(f"report: {report}")
    html = report.read_text()
    best = next(iter(summary_rows(s.stdout)))
    assert f"lr={best[0]}, mode={best[1]} (best)" in html and html.count("(best)") >= 1
    assert all(f"lr={lr}, mode={mode}" in html for lr, mode in summary_rows(s.stdout))
    report.unlink()
    t = packrun("report", sweep_dir, timeout=300)
    assert t.returncode == 0, shown(t)
    assert report.is_file()


def check_tensorboard_of_the_sweep(sweep_dir: Path) -> None:
    """Every point's event files (read with TensorBoard's reader): its pictures and its HParams
    session; then `packrun board SWEEP_DIR` serves them: each point under its directory name,
    its scalars equal to metrics.jsonl, and the HParams tab's sessions with lr and mode (the
    keys that differ) and both accuracies."""
    t0 = time.monotonic()
    for d in DIRS:
        point = sweep_dir / d
        acc = tensorboard_events(point / TB_DIR)
        for name in ("curves", "predictions", "confusion"):
            assert acc.Images(f"pictures/{name}")[-1].encoded_image_string == \
                (point / f"{name}.png").read_bytes()
    proc = subprocess.Popen(packrun_argv("board", sweep_dir), env=packrun_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        m = re.match(r"packrun: TensorBoard at (http://127\.0\.0\.1:\d+/) ", first)
        assert m, first + proc.stdout.read(2000)
        url = m.group(1)

        def get(path: str, body: dict | None = None):
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url + path, data=data,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        def served():
            try:
                return set(get("data/runs")) >= {f"{d}/tb" for d in DIRS} | \
                    {f"{d}/tb/hparams" for d in DIRS}
            except OSError:
                return False
        wait_for(served, 120, "TensorBoard to serve the four points")
        for d in DIRS:
            rows = read_metrics(sweep_dir / d)
            points = get(f"data/plugin/scalars/scalars?run={urllib.parse.quote(d + '/tb')}"
                         f"&tag={urllib.parse.quote('epoch/val_acc')}")
            assert [(p[1], p[2]) for p in points] == \
                [(r["epoch"] * r["steps"], float32(r["val_acc"])) for r in rows]
        experiment = get("data/plugin/hparams/experiment", {"experimentName": ""})
        differs = {h["name"] for h in experiment["hparamInfos"] if h["differs"]}
        assert differs == {"lr", "mode", "freeze"}, differs  # mode decides freeze
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} == \
            {"hparams/best_acc", "hparams/final_acc"}
        groups = get("data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                "STATUS_RUNNING"]})["sessionGroups"]
        assert {g["name"] for g in groups} == {f"{d}/tb/hparams" for d in DIRS}
        for g in groups:
            rows = read_metrics(sweep_dir / g["name"].split("/")[0])
            hp = g["hparams"]
            assert g["name"].startswith(f"lr={hp['lr']:g}_mode={hp['mode']}/")
            metrics = {v["name"]["tag"]: v["value"] for v in g["metricValues"]}
            assert metrics == {"hparams/best_acc": float32(rows[-1]["best_acc"]),
                               "hparams/final_acc": float32(rows[-1]["val_acc"])}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"TensorBoard checks of the sweep: {time.monotonic() - t0:.1f} s")


@pytest.mark.e2e
def test_parallel_points_run_at_the_same_time_with_their_console_in_the_point(tiny_job):
    r = packrun("sweep", tiny_job, "--grid", "lr=0.01,0.02", "--epochs=1", "--parallel=2",
                timeout=900)
    assert r.returncode == 0, shown(r)
    sweep_dir = sweep_dir_of(r.stdout)
    # both started before either finished
    first_end = min(r.stdout.index("lr=0.01 finished"), r.stdout.index("lr=0.02 finished"))
    assert r.stdout.index("lr=0.02 started") < first_end
    for d in ("lr=0.01", "lr=0.02"):
        console = (sweep_dir / d / "logs" / "console.out").read_text()
        assert "End training, the best acc is" in console
    assert "End training" not in r.stdout  # the consoles stayed in the points


@pytest.mark.e2e
def test_points_run_as_packrun_run_launches_with_launcher_and_workers(tiny_job):
    r = packrun("sweep", tiny_job, "--grid", "lr=0.01,0.02", "--epochs=1", "--launcher=msrun",
                "--workers=2", timeout=1200)
    assert r.returncode == 0, shown(r)
    sweep_dir = sweep_dir_of(r.stdout)
    assert "as msrun launches" in r.stdout
    for d in ("lr=0.01", "lr=0.02"):
        point = sweep_dir / d
        assert (point / "msrun.sh").is_file()
        assert json.loads((point / "job.json").read_text())["spec"]["cards_per_node"] == 2
        for rank in (0, 1):   # two workers per point, supervised as `packrun run` does
            assert (point / "logs" / f"worker_{rank}.exit").read_text().strip() == "0"
        assert (point / "logs" / "launcher.log").is_file()
    assert "packrun: msrun with 2 worker(s)" in r.stdout


@pytest.mark.e2e
def test_a_failing_point_does_not_stop_the_others_and_shows_in_the_summary(tiny_job, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    points = tmp_path / "points.txt"
    points.write_text(f"seed=1 pretrained={garbage}\nseed=2\n")
    r = packrun("sweep", tiny_job, f"--points={points}", "--epochs=1", timeout=900)
    assert r.returncode == 1, shown(r)
    sweep_dir = sweep_dir_of(r.stdout)
    assert re.search(r"point 1/2 \S+ failed \(exit \d+\)", r.stdout)
    assert re.search(r"point 2/2 seed=2\S* finished", r.stdout)
    rows = [line.split() for line in r.stdout[r.stdout.index("\nseed "):].strip().splitlines()]
    assert rows[0][:3] == ["seed", "pretrained", "state"]
    assert rows[2][:3] == ["2", '""', "completed"], rows     # best first
    assert rows[3][:6] == ["1", str(garbage), "failed", "-", "-", "-"], rows  # no accuracy: last
    assert (sweep_dir / "seed=2_pretrained=none" / "best.ckpt").is_file()
    assert (sweep_dir / "seed=1_pretrained=garbage.ckpt" / "logs" / "worker_0.log").is_file()


# =============================================================================================
# On the test Slurm cluster: one job array
# =============================================================================================

def _tasks(array_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", array_id], capture_output=True,
                         text=True).stdout
    return {m.group(1): m.group(2) for m in
            re.finditer(r"ArrayTaskId=(\S+).*?JobState=(\S+)", out)}


@pytest.fixture
def slurm_job(tmp_path, digits_2class, cluster):
    job = write_tiny_job(tmp_path / "tiny.toml", digits_2class, cards_per_node=1)
    yield job
    ids = [f.read_text().strip() for f in (tmp_path / "runs").glob("*/slurm_job_id")]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


@pytest.mark.cluster("slurm")
def test_a_2x2_grid_as_one_slurm_job_array(slurm_job):
    r = packrun("sweep", slurm_job, *GRID, "--slurm", "--wait", timeout=1800)
    assert r.returncode == 0, shown(r)
    sweep_dir = sweep_dir_of(r.stdout)
    array_id = (sweep_dir / "slurm_job_id").read_text().strip()
    assert f"submitted Slurm job array {array_id} (4 task(s), 4 at a time)" in r.stdout
    assert _tasks(array_id) == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED",
                                "3": "COMPLETED"}
    assert f"job array {array_id}: 4 of 4 task(s) COMPLETED" in r.stdout
    task_jobs = set()
    for d in DIRS:
        point = sweep_dir / d
        task_jobs.add((point / "slurm_job_id").read_text().strip())
        assert (point / "best.ckpt").is_file()
        assert len(list((point / TB_DIR).glob("events.out.tfevents.*"))) == 1  # rank 0's
        assert batch_step_succeeded(
            (point / f"slurm-{(point / 'slurm_job_id').read_text().strip()}.out").read_text())
    assert len(task_jobs) == 4          # one array, four tasks, each its own job id
    check_summary(r.stdout, sweep_dir)


@pytest.mark.cluster("slurm")
def test_cancel_of_a_sweep_cancels_every_task_of_its_array(slurm_job):
    r = packrun("sweep", slurm_job, *GRID, "--slurm", "--parallel=1", timeout=300)
    assert r.returncode == 0, shown(r)
    sweep_dir = sweep_dir_of(r.stdout)
    array_id = (sweep_dir / "slurm_job_id").read_text().strip()
    deadline = time.monotonic() + 120
    while "RUNNING" not in _tasks(array_id).values():  # one running, three pending
        assert time.monotonic() < deadline, _tasks(array_id)
        time.sleep(0.5)
    c = packrun("cancel", sweep_dir, timeout=120)
    assert c.returncode == 0, shown(c)
    assert f"cancelled job array {array_id}: 4 task(s)" in c.stdout
    deadline = time.monotonic() + 120
    while set(_tasks(array_id).values()) != {"CANCELLED"}:
        assert time.monotonic() < deadline, _tasks(array_id)
        time.sleep(0.5)
    again = packrun("cancel", sweep_dir, timeout=120)
    assert f"job array {array_id} already ended" in again.stdout


@pytest.mark.cluster("slurm")
def test_a_warning_signal_requeues_one_task_and_it_resumes(slurm_job, tmp_path):
    """Preemption per task: the warning signal to task 0's batch shell stops its workers after
    a step, task 0 requeues itself (its own job id) and resumes from last.ckpt; task 1 runs
    through untouched; --wait follows both to COMPLETED."""
    out = tmp_path / "sweep.out"
    with open(out, "w") as console:
        proc = subprocess.Popen(packrun_argv("sweep", slurm_job, "--grid", "lr=0.01,0.02",
                                             "--epochs=3", "--slurm", "--wait"),
                                cwd=REPO, env=packrun_env(), stdout=console,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while "submitted Slurm job array" not in out.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, out.read_text()
            time.sleep(0.5)
        sweep_dir = sweep_dir_of(out.read_text())
        first = sweep_dir / "lr=0.01"
        while not (read_metrics(first) and (first / "slurm_job_id").is_file()):
            assert time.monotonic() < deadline + 300 and proc.poll() is None, out.read_text()
            time.sleep(0.5)
        task_job = (first / "slurm_job_id").read_text().strip()
        # ARRAY_TASK: task 0's own job id may be the array's, which names every task
        array_id = re.search(r"submitted Slurm job array (\d+)", out.read_text()).group(1)
        subprocess.run(["scancel", "--signal=USR1", "--batch", f"{array_id}_0"], check=True,
                       timeout=60)
        rc = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert rc == 0, text[-5000:]
    batch = (first / f"slurm-{task_job}.out").read_text()
    assert f"packrun: the workers stopped on request; requeueing job {task_job}" in batch
    assert f"packrun: job {task_job} (restart 1) on " in batch
    assert re.search(r"task 0 \(point 1/2 lr=0.01\) \S+ \(job \d+, requeued 1 time\(s\)\)", text)
    assert "requeued" not in "\n".join(ln for ln in text.splitlines() if "task 1 " in ln)
    for d in ("lr=0.01", "lr=0.02"):
        assert [r["epoch"] for r in read_metrics(sweep_dir / d)] == [1, 2, 3]
    assert "2 of 2 task(s) COMPLETED" in text


@pytest.mark.unit
def test_status_of_the_point_whose_job_id_is_the_arrays_reads_its_own_task(monkeypatch):
    """The array's id is also one task's own job id; `scontrol show job ID` then lists every
    task, and a point's status must be its own task's, not the first listed."""
    from launcher.slurm import client as slurm
    out = ("JobId=28 ArrayJobId=27 ArrayTaskId=0 JobState=RUNNING Restarts=1 ExitCode=0:0\n"
           "JobId=27 ArrayJobId=27 ArrayTaskId=1 JobState=COMPLETED Restarts=0 ExitCode=0:0\n")
    monkeypatch.setattr(slurm, "call", lambda cmd, *a, **k: subprocess.CompletedProcess(
        cmd, 0, out, ""))
    assert slurm._from_scontrol("27").state == "COMPLETED"
    assert slurm._from_scontrol("28").state == "RUNNING"
    from launcher.sweep.array import array_tasks
    assert {t: i["state"] for t, i in array_tasks("27").items()} == {0: "RUNNING",
                                                                       1: "COMPLETED"}
