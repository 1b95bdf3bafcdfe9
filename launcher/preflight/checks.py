"""`packrun check JOB`: every preflight there is, training nothing; and the cheap part of it that
`packrun run` (and `submit`) run before they start anything.

Each check yields findings, `ok`, `warning` or `error`, each naming what it looked at and, for
problems, the fix. A check that meets bad input (a `UserError` from the spec, preflight, render
or rank-table code it reuses) reports it as an error and the others still run, so one `check`
lists every problem at once.

Cheap (seconds, no MindSpore): data layout and classes, image decoding (a sample by default),
devices, the launch artifacts as `render` would write them (rank table, hccn.conf, nodes and
hosts), the scheduler port, room in output_dir, launcher tools. Expensive (imports MindSpore,
builds the network): whether the pretrained checkpoint fits after head filtering.
This module must not import MindSpore at module level.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import os
import re
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from launcher.core import compile_cache, cores
from launcher.core.devices import parse_devices
from launcher.core.errors import EXIT_USER_ERROR, UserError
from launcher.core.log import STDERR, get_logger
from launcher.core.rundir.names import RANK_TABLE_JSON
from launcher.core.spec import JobSpec, WrongKind, load_job, path_problems
from launcher.preflight import data as preflight
from launcher.render import artifacts as render

OK, WARNING, ERROR = "ok", "warning", "error"
log = get_logger(__name__)

MAX_LISTED_IMAGES = 5   # undecodable images named one by one; the rest are counted
MiB = 1 << 20
OUTPUT_MARGIN = 64 * MiB  # logs, metrics, pictures, report

# (parameters of the network without its head, including BatchNorm statistics; features into
# the head). From src/model/resnet.py; tests/launcher/preflight/test_checks.py holds them equal
# to the built networks.
ARCH_SIZES = {"resnet18": (11_186_112, 512), "resnet34": (21_301_696, 512),
              "resnet50": (23_561_152, 2048), "resnet101": (42_605_504, 2048)}
# A machine's cards show as /dev/<prefix>N.
DEVICE_FILES = {"Ascend": "davinci", "GPU": "nvidia"}


@dataclass(frozen=True)
class Finding:
    level: str   # OK, WARNING or ERROR
    topic: str   # what was checked: data, images, devices, launch, port, output, tools, network
    text: str

    def __str__(self) -> str:
        return f"{self.level:<8}{self.topic}: {self.text}"


@dataclass(frozen=True)
class Options:
    slurm: bool = False       # the launch is `packrun submit`: job.sbatch, sbatch
    out: str | None = None    # run directories go here instead of output_dir
    images: str = "sample"    # decode policy: all, sample, auto, none (preflight.images_to_scan)
    here: bool = False        # the job runs on this machine now (debug, run): cards must be here
    missing: str = "error"    # level of a missing data folder, checkpoint or hccn.conf (ERROR,
    #                           or WARNING for `check --quick`, like `render`)
    source: str = "job"       # the job file, for messages
    port_checked: bool = False  # master_port was checked where node 0 runs (a launch over ssh)


# ---------------------------------------------------------------------------------------------
# Cheap checks
# ---------------------------------------------------------------------------------------------

def check_paths(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """Data folders and checkpoint exist (the checks `load_job` makes for run/debug/submit)."""
    for problem in path_problems(spec, opts.source):  # (when they exist, data and network say so)
        yield Finding(ERROR if isinstance(problem, WrongKind) else opts.missing, "paths",
                      str(problem))


def check_data(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """Layout, classes equal in both splits and equal to num_classes, images decodable."""
    try:
        yield from _check_data(spec, opts)
    except KeyboardInterrupt:
        raise preflight.interrupted("checking the data") from None


def _check_data(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    if not (Path(spec.train_dir).is_dir() and Path(spec.val_dir).is_dir()):
        yield Finding(WARNING, "data", "not checked: train_dir or val_dir is missing (see "
                      "paths above)")
        return
    train_split, val_split = preflight.scan_splits(
        spec, world=spec.nodes * spec.cards_per_node)
    for key, split in (("train_dir", train_split), ("val_dir", val_split)):
        report = preflight.skipped_report(key, split)
        if report:
            yield Finding(WARNING, "data", report)
    train, val = train_split.classes, val_split.classes
    yield Finding(OK, "data", f"{_count(train)} train / {_count(val)} val images in {len(train)} "
                  f"classes ({', '.join(sorted(train))}), the same in both splits")
    files = [f for split in (train, val) for images in split.values() for f in images]
    yield from check_decoding(files, opts.images, spec.seed)


def _count(split: dict[str, list[Path]]) -> int:
    return sum(map(len, split.values()))


def check_decoding(files: list[Path], policy: str, seed: int) -> Iterator[Finding]:
    scan = preflight.images_to_scan(files, policy, seed)
    if not scan:
        yield Finding(WARNING, "images", "image_check = \"none\": no image is decoded before "
                      "training; a bad file fails the run when it is read")
        return
    if len(scan) > 2000:
        log.info(f"packrun: decoding {len(scan)} images (image_check = \"sample\" or \"none\" "
                 "is faster)", extra=STDERR)
    bad = [(path, reason) for path in scan if (reason := preflight.decode_error(path))]
    for path, reason in bad[:MAX_LISTED_IMAGES]:
        yield Finding(ERROR, "images", f"image {path} cannot be decoded ({reason}); replace or "
                      "delete it")
    if len(bad) > MAX_LISTED_IMAGES:
        yield Finding(ERROR, "images", f"... and {len(bad) - MAX_LISTED_IMAGES} more images that "
                      "cannot be decoded")
    if not bad:
        what = "every image" if len(scan) == len(files) else \
            f"a sample of {len(scan)} of {len(files)} (--all_images decodes every one)"
        yield Finding(OK, "images", f"{what} decodes")


def visible_devices(device: str, dev_root: Path = Path("/dev")) -> list[int] | None:
    """Card ids this machine shows (/dev/davinciN, /dev/nvidiaN); None for CPU."""
    if device not in DEVICE_FILES:
        return None
    pattern = re.compile(rf"{DEVICE_FILES[device]}(\d+)")
    return sorted(int(m.group(1)) for p in dev_root.iterdir() if (m := pattern.fullmatch(p.name)))


def check_devices(spec: JobSpec, opts: Options, dev_root: Path = Path("/dev")) -> Iterator[Finding]:
    """device_id (debug runs) and cards_per_node (runs on this machine) against the cards here."""
    if opts.slurm:
        yield Finding(OK, "devices", "Slurm allocates the nodes and their cards")
    elif spec.device == "CPU":
        yield from _cpu_workers(spec)
    else:
        yield from _cards(spec, visible_devices(spec.device, dev_root) or [],
                          f"{dev_root}/{DEVICE_FILES[spec.device]}N", opts.here)


def _cards(spec: JobSpec, cards: list[int], files: str, here: bool = False) -> Iterator[Finding]:
    if not cards and here:
        yield Finding(ERROR, "devices", f"device = {spec.device!r} but this machine has no "
                      f"{spec.device} cards ({files}); run it where the cards are (packrun "
                      "submit), or set device = \"CPU\"")
        return
    if not cards:
        yield Finding(WARNING, "devices", f"no {spec.device} cards visible here ({files}): "
                      f"device_id {spec.device_id} and cards_per_node {spec.cards_per_node} are "
                      "checked where the job runs (fine on a login node)")
        return
    listed = ", ".join(map(str, cards))
    problems = []
    if spec.devices:
        absent = [d for d in parse_devices(spec.devices, "key 'devices'") if d not in cards]
        if absent:
            problems.append(f"devices {spec.devices}: card(s) {', '.join(map(str, absent))} "
                            f"not on this machine ({spec.device} cards {listed}, {files}); "
                            "list cards it has")
    if spec.device_id not in cards:
        problems.append(f"device_id {spec.device_id}: this machine has {spec.device} cards "
                        f"{listed} ({files}); set device_id to one of them")
    if spec.cards_per_node > len(cards):
        problems.append(f"cards_per_node {spec.cards_per_node}: this machine has {len(cards)} "
                        f"{spec.device} card(s) ({listed}); set cards_per_node <= {len(cards)}")
    for text in problems:
        yield Finding(ERROR, "devices", text)
    if not problems:
        yield Finding(OK, "devices", f"{spec.device} cards {listed}: device_id {spec.device_id} "
                      f"and {spec.cards_per_node} card(s) per node available")


def _cpu_workers(spec: JobSpec) -> Iterator[Finding]:
    if spec.device_id != 0:
        yield Finding(WARNING, "devices", f"device_id {spec.device_id} is ignored on CPU")
    cores = os.cpu_count() or 1
    if spec.cards_per_node > cores:
        yield Finding(WARNING, "devices", f"cards_per_node {spec.cards_per_node} CPU workers on "
                      f"{cores} cores: they will share cores and run slowly")
    else:
        yield Finding(OK, "devices", f"CPU: {spec.cards_per_node} worker(s) per node on {cores} "
                      "cores")


def check_job(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """Settings that are valid but almost certainly not meant (preflight.job_warnings)."""
    for text in preflight.job_warnings(spec):
        yield Finding(WARNING, "job", text)


def check_launch(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """Render the launch in memory, as `packrun render` would: nodes, hosts, ports, rank table
    (hccn.conf or device_ips)."""
    placeholder = Path(opts.out or spec.output_dir).resolve() / f"{spec.name}-YYYYmmdd-HHMMSS"
    warnings: list[str] = []
    artifacts = render.render_artifacts(spec, placeholder, slurm=opts.slurm,
                                        warn=warnings.append if opts.missing == WARNING else None)
    for text in warnings:
        yield Finding(WARNING, "launch", text)
    how = "Slurm (msrun on every node)" if opts.slurm else spec.launcher
    yield Finding(OK, "launch", f"{how}, {spec.nodes} node(s) x {spec.cards_per_node} worker(s): "
                  f"renders {', '.join(sorted(artifacts))}")
    if RANK_TABLE_JSON in artifacts:
        if spec.rank_table_file:
            yield Finding(OK, "rank table", f"rank_table_file {spec.rank_table_file}: "
                          f"{spec.nodes * spec.cards_per_node} device(s) on {spec.nodes} "
                          "server(s), valid; copied as it is into the run directory "
                          "(rank_table.json)")
        else:
            source = "device_ips" if spec.device_ips else f"hccn_conf {spec.hccn_conf}"
            cards = spec.devices or f"0-{spec.cards_per_node - 1}"
            yield Finding(OK, "rank table", f"written by packrun: cards {cards} on each of "
                          f"{spec.nodes} server(s), device IPs from {source}")


def check_cores(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """bind_cores: the range each local rank gets, from this machine's cores (the launch splits
    the cores it finds where it starts)."""
    if not spec.bind_cores:
        yield Finding(OK, "cores", "bind_cores = false: every worker may run on every core")
        return
    if opts.slurm or spec.nodes > 1:
        yield Finding(OK, "cores", f"bound where each node's launch starts: its cores // "
                      f"{spec.cards_per_node} per rank, one contiguous NUMA-local range each")
        return
    try:
        split = cores.split_cores(cores.available_cores(), cores.numa_nodes(),
                                  spec.cards_per_node)
    except UserError as e:
        # an error where the job starts now; elsewhere (a login node) the cores are the nodes'
        yield Finding(ERROR if opts.here else WARNING, "cores",
                      str(e) if opts.here else f"{e} (here; checked again where the job runs)")
        return
    ranges = ", ".join(f"rank {r}: {cores.format_cpulist(c)}" for r, c in enumerate(split))
    yield Finding(OK, "cores", f"{len(split[0])} core(s) per rank ({ranges}); "
                  f"num_parallel_workers {spec.num_parallel_workers or 'auto'} -> "
                  f"{min(spec.num_parallel_workers or 8, len(split[0]))} per rank")


def check_port_free(port: int, host: str = "") -> None:
    """A busy scheduler port makes MindSpore's workers hang until the cluster timeout; say so
    now instead."""
    if port == 0:
        return
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"master_port {port} is already in use on this machine; choose "
                                "another port, or master_port = 0 to pick a free one") from None
            raise UserError(f"master_port {port} cannot be used here ({e.strerror})") from None


def check_port(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    if spec.master_port == 0:
        yield Finding(OK, "port", "master_port = 0: a free port is picked when the launch starts")
    elif opts.port_checked:
        yield Finding(OK, "port", f"master_port {spec.master_port} is free on node 0")
    elif spec.nodes > 1 or opts.slurm:
        yield Finding(WARNING, "port", f"master_port {spec.master_port} is opened on node 0, "
                      "not checked from here; make sure it is free there")
    else:
        check_port_free(spec.master_port)
        yield Finding(OK, "port", f"master_port {spec.master_port} is free")


def checkpoint_bytes(spec: JobSpec) -> int:
    """Peak disk use of a run's checkpoints: best.ckpt, last.ckpt (network + optimizer moments)
    and, while last.ckpt is replaced, its temporary copy: float32 throughout."""
    backbone, features = ARCH_SIZES[spec.arch]
    head = (features + 1) * spec.num_classes
    params = backbone + head
    moments = head if spec.freeze == "all" else params  # partial freeze: an upper bound
    best, last = 4 * params, 4 * (params + moments)
    return best + 2 * last


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_output(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    out = Path(opts.out or spec.output_dir).expanduser().resolve()
    what = "--out" if opts.out else "output_dir"
    base = _existing_ancestor(out)
    if not base.is_dir():
        raise UserError(f"{what} {out}: {base} is a file; set {what} to a directory")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise UserError(f"{what} {out}: cannot write in {base} ({e.strerror}); set {what} to a "
                        "writable directory") from None
    need, free = checkpoint_bytes(spec) + OUTPUT_MARGIN, shutil.disk_usage(base).free
    if free < need:
        raise UserError(f"{what} {out}: {free / MiB:.0f} MiB free, a run needs about "
                        f"{need / MiB:.0f} MiB ({spec.arch} best.ckpt + last.ckpt with optimizer "
                        f"moments + a temporary copy while saving); free space or set {what} "
                        "to a larger disk")
    yield Finding(OK, "output", f"{out} is writable, {free / MiB:.0f} MiB free for about "
                  f"{need / MiB:.0f} MiB of checkpoints and logs")


def check_tools(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """MindSpore for the workers (and msrun, `python -m mindspore.parallel.cluster.run`), mpirun
    for launcher mpirun, sbatch for Slurm; found without importing anything."""
    if importlib.util.find_spec("mindspore") is None:
        # Slurm's nodes run this same interpreter, but a login node may lack what they have.
        yield Finding(WARNING if opts.slurm else ERROR, "tools", f"MindSpore is not installed "
                      f"for {sys.executable}; the workers and msrun need it: pip install mindspore")
    else:
        yield Finding(OK, "tools", f"MindSpore importable by {sys.executable}")
    needed = {"mpirun": spec.launcher == "mpirun" and not opts.slurm, "sbatch": opts.slurm}
    fixes = {"mpirun": "install Open MPI (apt-get install openmpi-bin) or use --launcher=msrun",
             "sbatch": "run packrun submit on a Slurm login node"}
    for tool in (t for t, used in needed.items() if used):
        path = shutil.which(tool)
        if path:
            yield Finding(OK, "tools", f"{tool} is {path}")
        else:
            yield Finding(ERROR, "tools", f"{tool} not found on PATH; {fixes[tool]}")


def check_compile_cache(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """Where this machine keeps compiled graphs (launcher/core/compile_cache.py); a size bound
    that is not a number is an error, a directory others may write to a warning (the workers
    then compile without it)."""
    settings = compile_cache.settings(os.environ, spec.compile_cache)
    if settings.root is None:
        yield Finding(OK, "compile cache", f"off ({settings.why})")
        return
    why = compile_cache.prepare_root(settings.root)
    if why:
        yield Finding(WARNING, "compile cache", f"not used: {why}")
    else:
        yield Finding(OK, "compile cache", f"{settings.root} (at most "
                      f"{settings.max_bytes / 2**30:g} GiB, least recently used entries go)")


CHEAP_CHECKS = (("job", check_job), ("paths", check_paths), ("data", check_data),
                ("devices", check_devices), ("launch", check_launch), ("cores", check_cores),
                ("port", check_port), ("output", check_output), ("tools", check_tools),
                ("compile cache", check_compile_cache))


# ---------------------------------------------------------------------------------------------
# The expensive check: build the network (MindSpore)
# ---------------------------------------------------------------------------------------------

def check_network(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """The head exists and the pretrained checkpoint fits the network after head filtering:
    names and shapes (nothing is loaded into the network)."""
    if spec.pretrained and not Path(spec.pretrained).is_file():
        yield Finding(WARNING, "network", "checkpoint fit not checked: pretrained is missing "
                      "(see paths above)")
        return
    from src.train import build_network
    from src.training.checkpoint import check_fit, head_parameter_names, read_checkpoint, shapes
    net = build_network(spec)
    net_shapes = shapes(net.get_parameters())
    heads = head_parameter_names(net, spec.head)
    yield from transfer_findings(spec, net)
    if not spec.pretrained:
        yield Finding(OK, "network", f"{spec.arch}, head '{spec.head}' ({', '.join(heads)}); "
                      "pretrained = \"\": trains from scratch")
        return

    file_shapes = shapes(read_checkpoint(spec.pretrained))
    fit = check_fit(file_shapes, net_shapes, heads)
    problems = fit.problems(spec.pretrained, spec.arch)
    for text in problems:
        yield Finding(ERROR, "network", text)
    if not problems:
        yield Finding(OK, "network", f"checkpoint {spec.pretrained} fits {spec.arch} after head "
                      f"filtering: {len(fit.loaded)} parameters load, re-initialised: "
                      f"{', '.join(fit.missing) or 'none'}; {len(fit.unused)} file entries unused")


def transfer_findings(spec: JobSpec, net) -> Iterator[Finding]:
    """Which parameters train (by stage), and what the feature cache will hold per worker."""
    from src.model.stages import GIB, cache_bytes, human_bytes
    from src.training.transfer import apply_freeze
    for line in apply_freeze(net, spec.freeze, spec.head).lines():  # one finding per line
        yield Finding(OK, "trainable", line.strip())
    if spec.freeze == "none":
        return
    if not spec.pretrained:
        yield Finding(WARNING, "trainable", f"freeze = {spec.freeze!r} with pretrained = \"\": "
                      "the frozen stages keep their random initialisation; set pretrained")
    if spec.feature_cache == "off":
        return
    train, val = preflight.check_layout(spec)
    world = spec.nodes * spec.cards_per_node
    n_train = _count(train) // world
    n_val = _count(val) if spec.eval_mode == "rank0" or world == 1 else -(-_count(val) // world)
    views = spec.cache_views if spec.feature_cache == "augmented" else 1
    need = cache_bytes(spec.arch, spec.freeze, spec.image_size, n_train, views, n_val)
    what = (f"{n_train} train images x {views} view(s) + {n_val} val images per worker = "
            f"{human_bytes(need)}")
    if need > spec.cache_max_gib * GIB:
        yield Finding(WARNING, "cache", f"the feature cache would hold {what}, over "
                      f"cache_max_gib = {spec.cache_max_gib:g}: the worker will recompute the "
                      "frozen prefix every step; raise cache_max_gib to cache")
    else:
        yield Finding(OK, "cache", f"the feature cache will hold {what} (cache_max_gib = "
                      f"{spec.cache_max_gib:g})")


# ---------------------------------------------------------------------------------------------
# Running checks
# ---------------------------------------------------------------------------------------------

def _guarded(topic: str, check: Callable[..., Iterator[Finding]], spec: JobSpec,
             opts: Options) -> Iterator[Finding]:
    try:
        yield from check(spec, opts)
    except UserError as e:
        yield Finding(ERROR, topic, str(e))


def check_node(spec: JobSpec, opts: Options) -> Iterator[Finding]:
    """`packrun check` on an Ascend node: the node checks its launch will run
    (launcher/preflight/node.py) for node 0's cards; skipped for Slurm (they run on the nodes)."""
    if spec.device != "Ascend" or spec.node_checks == "off" or opts.slurm:
        return
    from launcher.preflight import node
    cards, source = node.node_cards(spec, os.environ)
    yield Finding(OK, "node", f"cards {','.join(map(str, cards))} from {source}")
    for f in node.check_node(spec, cards, None, None, env=os.environ):
        level = WARNING if f.level == ERROR and spec.node_checks == "warn" else f.level
        card = f"card {f.card}: " if f.card is not None else ""
        yield Finding(level, "node", f"{card}{f.text}" + (f"; fix: {f.fix}" if f.fix else ""))


def findings(spec: JobSpec, opts: Options, network: bool) -> Iterator[Finding]:
    """Every finding of the cheap checks, then of the node checks (`packrun check` on an Ascend
    node) and the network check when `network`."""
    checks = CHEAP_CHECKS + ((("node", check_node), ("network", check_network))
                             if network else ())
    for topic, check in checks:
        yield from _guarded(topic, check, spec, opts)


def check_before_launch(spec: JobSpec, *, slurm: bool = False, out: str | None = None,
                        here: bool | None = None, port_checked: bool = False) -> None:
    """The cheap checks, before `packrun run` / `submit` start anything: warnings are logged,
    errors raise one UserError listing them. Images are decoded as the job's image_check says
    (`auto`: every image up to 20000, else a sample). `here`: whether the job's node 0 runs on
    this machine (its cards checked here); by default, unless `slurm`. `port_checked`: the
    master port was found free where node 0 runs (a launch over ssh)."""
    opts = Options(slurm=slurm, out=out, images=spec.image_check,
                   here=not slurm if here is None else here, port_checked=port_checked)
    found = list(findings(spec, opts, False))
    for f in found:
        if f.level == WARNING:
            log.warning(f"packrun: warning: {f.topic}: {f.text}")
    errors = [f for f in found if f.level == ERROR]
    if len(errors) == 1:
        raise UserError(errors[0].text)
    if errors:
        raise UserError(f"{len(errors)} problems before launch:\n"
                        + "\n".join(f"  {f.topic}: {f.text}" for f in errors))


def check_debug_run(spec: JobSpec) -> None:
    """What `packrun debug` needs besides the data (preflight): its card, and room to write
    (a read-only or full output_dir fails before a run directory exists)."""
    opts, one_worker = Options(here=True), dataclasses.replace(spec, cards_per_node=1)
    for check in (check_devices, check_output, check_compile_cache):
        for f in check(one_worker, opts):
            if f.level == ERROR:
                raise UserError(f.text)
            if f.level == WARNING:
                log.warning(f"packrun: warning: {f.topic}: {f.text}")



def check_command(job: str, overrides: dict, *, all_images=False, quick=False,
                  slurm=False) -> int:
    """`packrun check`: print every finding as it comes (errors on stderr); 0, or 2 when any
    check found an error."""
    spec = load_job(job, overrides, check_paths=False)  # missing paths: findings (check_paths)
    policy = "all" if all_images or spec.image_check == "all" else \
        "none" if spec.image_check == "none" else "sample"
    print(Finding(OK, "job", f"{job}: {spec.arch} {spec.mode}, {spec.num_classes} classes, "
                  f"device {spec.device}"), flush=True)
    counts = {OK: 1, WARNING: 0, ERROR: 0}
    opts = Options(slurm=slurm, images=policy, missing=WARNING if quick else ERROR,
                   source=str(job))
    for f in findings(spec, opts, network=not quick):
        counts[f.level] += 1
        print(f, file=sys.stderr if f.level == ERROR else sys.stdout, flush=True)
    verdict = "fix the errors above" if counts[ERROR] else "ready to run"
    print(f"packrun check: {counts[ERROR]} error(s), {counts[WARNING]} warning(s): {verdict}",
          file=sys.stderr if counts[ERROR] else sys.stdout, flush=True)
    return EXIT_USER_ERROR if counts[ERROR] else 0
