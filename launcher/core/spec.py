"""The job spec: every key a job file or a CLI flag can set, declared once, validated once.

A job file (TOML, flat keys) and CLI overrides resolve into one frozen `JobSpec`. The run
directory holds it as `job.json`; the worker, the templates and every command read that and
nothing else. Each field declares its type, default, documentation and constraints here, and the
validation, the error messages and the README's job-file reference are derived from these
declarations.

This module must not import MindSpore: it runs on login nodes and in `--help`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from launcher.core.devices import parse_devices
from launcher.core.errors import UserError

Lines = tuple[str, ...]  # a list key's value: one-line strings, a tuple as the spec is frozen


# `freeze` stages in network order ("up to and including"), and the mode each one means.
FREEZE = ("none", "stem", "layer1", "layer2", "layer3", "all")
MODES = ("finetune", "fixed_feature", "partial")


def mode_of_freeze(freeze: str) -> str:
    return {"none": "finetune", "all": "fixed_feature"}.get(freeze, "partial")


def sharded_evaluation(eval_mode: str, world: int) -> bool:
    """Whether every rank evaluates its shard (eval_mode "sharded", or "auto" with more than one
    worker) rather than one process the whole validation set."""
    return eval_mode in ("sharded", "auto") and world > 1


def key(default, doc, *, choices=None, minimum=None, maximum=None, path=None, required=False,
        group="training", item=None, fix=None, grammar=None, compare=None):
    """Declare one job key. `path` is None (not a path), "dir" or "file" (must exist when set),
    or "out" (a directory that will be created); `fix` says what to set when the path is wrong.
    `item` = (regex, what it means) that every entry of a list key, or every name of a dict key,
    must match. `grammar` (a Grammar) is the text a string key may hold when it is not "".
    `compare`: whether runs are compared by this key (TensorBoard's HParams entry of every run;
    default: the "training" group's keys, what is trained and how). A dict default is copied
    for each spec."""
    meta = dict(doc=doc, choices=choices, minimum=minimum, maximum=maximum, path=path,
                required=required, group=group, item=item, fix=fix, grammar=grammar,
                compare=group == "training" if compare is None else compare)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Grammar:
    """What a string key may hold: every character in `chars` (a regex character class), the
    whole text matching `shape`; `rule` says both in words for the error message."""
    chars: str
    shape: str
    rule: str


# Grammars of the string keys that reach launch scripts bare (names in comments, #SBATCH lines,
# the hostfile). Paths and `env` values are shell-quoted instead; every string key refuses
# control characters (newline, tab, NUL, ...). README "Bad input" lists these.
NAME = Grammar(r"[A-Za-z0-9._-]", r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}",
               "it names the run directory and the Slurm job: letters, digits, '.', '_' and '-', "
               "not starting with '.' or '-', at most 200 characters")
HOST = Grammar(r"[A-Za-z0-9._:-]",
               r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*",
               "a host name (letters, digits, '.', '_', '-') or an IPv4/IPv6 address")
HOSTLIST = Grammar(r"[A-Za-z0-9._,\[\]-]", r"[A-Za-z0-9_\[][A-Za-z0-9._,\[\]-]*",
                   "host names, comma-separated, with Slurm [ranges] (letters, digits, '.', '_', "
                   "'-', ',', '[', ']')")
SSH_OPTIONS = Grammar(r"[A-Za-z0-9._,:@/~+%=* \[\]-]", r"-[A-Za-z0-9._,:@/~+%=* \[\]-]*",
                      "ssh options such as '-p 2222 -J bastion -F ~/.ssh/cluster' (which options "
                      "pass: docs/multinode.md)")
SLURM_NAME = Grammar(r"[A-Za-z0-9._-]", r"[A-Za-z0-9_][A-Za-z0-9._-]*",
                     "a Slurm name: letters, digits, '.', '_' and '-'")
SLURM_NAMES = Grammar(r"[A-Za-z0-9._,-]",
                      r"[A-Za-z0-9_][A-Za-z0-9._-]*(,[A-Za-z0-9_][A-Za-z0-9._-]*)*",
                      "Slurm names, comma-separated: letters, digits, '.', '_' and '-'")
SLURM_TIME = Grammar(r"[0-9:A-Za-z-]",
                     r"\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|(?i:unlimited|infinite)",
                     "Slurm takes MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (e.g. "
                     "\"2:00:00\" or \"1-12\"), or UNLIMITED")
GRES = Grammar(r"[A-Za-z0-9._:,-]", r"[A-Za-z0-9_][A-Za-z0-9._:,-]*",
               "Slurm gres: name[:type]:count, comma-separated (letters, digits, '.', '_', '-', "
               "':', ',')")
IP_LIST = Grammar(r"[0-9A-Fa-f.:, ]", r"[0-9A-Fa-f.:, ]*", "IP addresses, comma-separated")
DEVICES = Grammar(r"[0-9,-]", r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*",
                  "card numbers and ranges, comma-separated, e.g. 4-7 or 0,2,4,6")
CELL = Grammar(r"[A-Za-z0-9_.]", r"[A-Za-z_][A-Za-z0-9_.]*",
               "a cell name: letters, digits, '_' and '.'")


@dataclass(frozen=True)
class JobSpec:
    # --- what to train -------------------------------------------------------------------------
    name: str = key("job", "Run name; the run directory is <output_dir>/<name>-<YYYYmmdd-HHMMSS>.",
                    grammar=NAME)
    mode: str = key("finetune", "`finetune` trains every parameter (freeze = \"none\"); "
                    "`fixed_feature` freezes all but the head (freeze = \"all\"); `partial` "
                    "goes with freeze = stem..layer3. Set mode or freeze; both must agree.",
                    choices=MODES)
    freeze: str = key("none", "How much of the backbone is frozen, up to and including: `stem` "
                      "(conv1, bn1), `layer1` .. `layer3`, `all` (everything but the head). "
                      "Frozen = weights and BatchNorm statistics fixed. A command-line --freeze "
                      "replaces the job file's mode, and --mode its freeze.", choices=FREEZE)
    head_lr_mult: float = key(1.0, "The head's learning rate is lr x head_lr_mult (e.g. 10 for a "
                              "fresh classifier on a pretrained backbone).", minimum=0.0)
    label_smoothing: float = key(0.0, "Label smoothing of the cross-entropy loss, in [0, 1).",
                                 minimum=0.0)
    arch: str = key("resnet50", "Backbone (Model Zoo parameter names).",
                    choices=("resnet18", "resnet34", "resnet50", "resnet101"))
    num_classes: int = key(2, "Classes of the new head; must equal the class folders in "
                           "train_dir.", minimum=2)
    train_dir: str = key("", "ImageFolder of training images: one sub-folder per class.",
                         path="dir", required=True)
    val_dir: str = key("", "ImageFolder of validation images, same class folders as train_dir.",
                       path="dir", required=True)
    image_size: int = key(224, "Square input size in pixels.", minimum=8, maximum=4096)
    min_crop_scale: float = key(0.08, "Smallest area fraction of the random training crop "
                                "(the tutorial's 0.08; raise it for small or centred objects).",
                                minimum=0.01, maximum=1.0)
    hflip: bool = key(True, "Random horizontal flip in training (off for digits, text, ...).")
    batch_size: int = key(24, "Images per step per worker.", minimum=1)
    epochs: int = key(20, "Training epochs.", minimum=1)
    lr: float = key(0.001, "Base learning rate (Momentum optimizer).", minimum=0.0)
    momentum: float = key(0.9, "Momentum.", minimum=0.0, maximum=1.0)
    weight_decay: float = key(0.0, "L2 weight decay.", minimum=0.0)
    lr_schedule: str = key("constant", "`constant` (the tutorial) or `cosine` decay to 0.",
                           choices=("constant", "cosine"))
    warmup_epochs: int = key(0, "Epochs of linear warm-up from 0 to lr.", minimum=0)
    pretrained: str = key("", "Checkpoint to start from (head entries are dropped); \"\" trains "
                          "from scratch.", path="file")
    head: str = key("end_point", "Name of the classifier cell: its parameters are re-initialised "
                    "and are the only ones trained in fixed_feature mode (freeze = \"all\").",
                    grammar=CELL)
    seed: int = key(1, "Seed for weights, data order and augmentation; identical on every rank.",
                    minimum=0, maximum=2 ** 63 - 1)
    feature_cache: str = key("eval", "With a frozen prefix (freeze other than none): run it once "
                             "per image and view and train the rest on its cached output. `eval` "
                             "caches one view per image made with the evaluation transforms "
                             "(fastest: benchmarks/bench_fixed_feature.py), `augmented` caches "
                             "cache_views augmented views, `off` trains on freshly augmented "
                             "images, recomputing the frozen part every step.",
                             choices=("augmented", "eval", "off"))
    cache_views: int = key(2, "Augmented views cached per training image (feature_cache = "
                           "\"augmented\"); each epoch uses one of them per image.",
                           minimum=1, maximum=64)
    cache_max_gib: float = key(4.0, "Largest feature cache per worker, in GiB (the worker says "
                               "what it will hold before it starts); past it the frozen prefix "
                               "is recomputed every step instead, with a note (with `eval` views "
                               "the same result, slower). 0 never caches.", minimum=0.0)
    # --- where and how it runs -----------------------------------------------------------------
    device: str = key("CPU", "Device target.", choices=("CPU", "GPU", "Ascend"), group="device",
                      compare=True)
    device_id: int = key(0, "Device for a single-card run.", minimum=0, maximum=15,
                         group="device")
    amp_level: str = key("O0", "Mixed precision level (Ascend/GPU); CPU runs O0.",
                         choices=("O0", "O2", "O3"), group="device", compare=True)
    sink_mode: bool = key(True, "Dataset sink mode (Ascend/GPU); CPU runs without sink.",
                          group="device")
    sink_size: int = key(50, "Steps per sink chunk in sink mode: a stop request (preemption "
                         "warning, preempt.requested) is honoured within this many steps.",
                         minimum=1, group="device")
    graph_mode: bool = key(True, "MindSpore GRAPH_MODE (compiled); false runs PYNATIVE_MODE.",
                           group="device", compare=True)
    cpu_conv: str = key("im2col", "CPU convolution: `im2col` (fast unfold+matmul path) or "
                        "`native` (nn.Conv2d). Ignored on GPU/Ascend.",
                        choices=("im2col", "native"), group="device")
    compile_cache: bool = key(True, "Keep the compiled graphs for the next run of the same "
                              "network, shapes and code (MindSpore's compile cache in "
                              "~/.cache/packrun/compile, per user; docs/speed.md): a repeated "
                              "run skips most of the compile before its first step. false "
                              "compiles afresh (a variable turns it off for all jobs: "
                              "docs/speed.md).",
                              group="device")
    num_parallel_workers: int = key(0, "Data pipeline worker threads per process; 0 = the cores "
                                    "of the rank's range (bind_cores), at most 8. Never more "
                                    "than the cores the process may use.", minimum=0,
                                    maximum=64, group="device")
    # --- evaluation and outputs ----------------------------------------------------------------
    output_dir: str = key("runs", "Where run directories are created.", path="out",
                          group="output")
    eval_interval: int = key(1, "Evaluate every this many epochs.", minimum=1, group="output",
                             compare=True)
    eval_batch_size: int = key(0, "Images per evaluation batch (validation, the run's pictures); "
                               "0 = batch_size. Inference keeps no activations for a backward "
                               "pass, so a larger batch usually fits, and it evaluates small "
                               "images several times faster on CPU (fewer, fuller calls).",
                               minimum=0, group="output")
    eval_start_epoch: int = key(1, "First epoch that is evaluated.", minimum=1, group="output")
    image_check: str = key("auto", "Preflight decode of images: `all`, `sample` (200 per split), "
                           "`none`; `auto` is `all` up to 20000 images, else `sample`.",
                           choices=("auto", "all", "sample", "none"), group="output")
    eval_mode: str = key("auto", "Data-parallel evaluation: `rank0` evaluates the whole validation "
                         "set on rank 0 while the others wait in a collective (bounded by "
                         "collective_timeout); `sharded` lets every rank evaluate its shard and "
                         "all-reduces the counts; `auto` is `sharded` with more than one worker. "
                         "Same accuracy either way.",
                         choices=("auto", "rank0", "sharded"), group="output")
    tensorboard: bool = key(True, "Write TensorBoard event files into RUN_DIR/tb (rank 0 only): "
                            "per-step loss, learning rate, images/s and step time, per-epoch "
                            "accuracy and times, the run's pictures, the job and an HParams "
                            "entry (docs/tensorboard.md). `packrun board` shows them.",
                            group="output")
    log_every_steps: int = key(5, "TensorBoard's per-step values are written every this many "
                               "training steps (global step); 5 keeps 4 points of a 20-step "
                               "epoch.", minimum=1, group="output")
    scale_lr: bool = key(False, "Scale lr linearly with the number of workers (effective batch = "
                         "workers x batch_size). Off by default: lr means the same in a debug "
                         "run and an 8-card run.", group="launch", compare=True)
    # --- launch (launcher/render/artifacts.py) ---------------------------------------------
    launcher: str = key("msrun", "How the data-parallel workers start: `msrun` (MindSpore's "
                        "launcher, any device), `rank_table` (one process per Ascend card with an "
                        "HCCL rank table, Model Zoo style) or `mpirun` (Open MPI).",
                        choices=("msrun", "rank_table", "mpirun"), group="launch")
    nodes: int = key(1, "Machines the job runs on.", minimum=1, group="launch", compare=True)
    cards_per_node: int = key(1, "Worker processes per node: one per card on GPU/Ascend, CPU "
                              "workers on CPU.", minimum=1, maximum=16, group="launch",
                              compare=True)
    hosts: str = key("", "The nodes in node-rank order, comma-separated or in Slurm hostlist "
                     "syntax (`node[01-02]`, `10.0.0.[1-2]`): the mpirun hostfile and the rank "
                     "table's server ids (IPv4 there); needed for nodes > 1 without Slurm. "
                     "`packrun run` starts node k on host k over ssh (ssh aliases work; the rank "
                     "table then holds the address each host has). With Slurm it becomes "
                     "`--nodelist`.", group="launch", grammar=HOSTLIST)
    master_addr: str = key("", "Address of node 0, where MindSpore's scheduler runs; \"\" = "
                           "127.0.0.1 on one node, node 0's own address when `packrun run` starts "
                           "the nodes over ssh, else the first of `hosts` or the first node of "
                           "the Slurm allocation.", group="launch", grammar=HOST)
    ssh: str = key("", "Extra options for the ssh that `packrun run --nodes=N --hosts=...` "
                   "starts the other nodes with, e.g. `-p 2222 -J bastion -F ~/.ssh/cluster`: "
                   "where and how to connect only (-p, -J, -F, -i, -l, -o KEY=VALUE for "
                   "connection settings, -4, -6, -C, -q, -v); options that run commands "
                   "(ProxyCommand, LocalCommand, ...) are refused. Your ~/.ssh/config applies "
                   "either way.", group="launch", grammar=SSH_OPTIONS)
    master_port: int = key(0, "Scheduler TCP port; 0 = a free port picked when the launch script "
                           "starts (one node, Slurm, or mpirun), or on node 0 before `packrun run` "
                           "starts the nodes over ssh; nodes started one by one need an explicit "
                           "port.", minimum=0, maximum=65535, group="launch")
    cluster_timeout: int = key(0, "Seconds processes wait for their peers while the cluster forms "
                               "(msrun --cluster_time_out, MS_TOPO_TIMEOUT; on Ascend also "
                               "HCCL_CONNECT_TIMEOUT, which is at least 120). 0 = by launch kind: "
                               "60 where one command starts every node (one machine, Slurm, "
                               "mpirun, `packrun run` over ssh), so a dead peer fails the "
                               "job fast; 600 (msrun's own) where each node's script is "
                               "started by hand.", minimum=0,
                               maximum=7200, group="launch")
    collective_timeout: int = key(1836, "Seconds a rank may wait in one collective operation "
                                  "before the job fails (HCCL_EXEC_TIMEOUT on Ascend; CANN rounds "
                                  "it down to a multiple of 68): long enough for rank 0 to "
                                  "evaluate 50,000 images at 224 px (at 30 images/s) and save "
                                  "checkpoints while the others wait (eval_mode = \"rank0\"). "
                                  "GPU (NCCL) and CPU have no such timeout in MindSpore.",
                                  minimum=68, maximum=17340, group="launch")
    stall_timeout: int = key(600, "Seconds without progress from any rank (a training step, an "
                             "evaluation or caching batch, a save) after which the supervisor "
                             "declares the job stalled: it writes every rank's stacks to "
                             "logs/worker_<rank>.stack, names the stuck rank in failure.json, "
                             "stops the job and restarts it within max_restarts. In sink mode the "
                             "bound grows by the longest sink chunk seen. 0 = no watchdog. The "
                             "default is about 10x the longest silence of a healthy job after "
                             "start-up (docs/resume.md: how it was chosen).", minimum=0,
                             maximum=86400, group="launch")
    startup_timeout: int = key(1800, "The stall bound (seconds) until every rank has trained its "
                               "first step, and for the first batch of an evaluation or caching "
                               "pass (imports, reading the data, graph compilation); at least "
                               "stall_timeout is used.", minimum=1, maximum=86400,
                               group="launch")
    bind_cores: bool = key(True, "Bind each local rank to its own contiguous, NUMA-local range of "
                           "the cores the launch may use (cores // local ranks each): msrun "
                           "--bind_core, taskset for rank tables, Open MPI --bind-to core.",
                           group="launch")
    devices: str = key("", "The cards of each node the job uses, e.g. `4-7` or `0,2,4,6` (as "
                       "many as cards_per_node); \"\" = cards 0..cards_per_node-1. Sets the rank "
                       "table's devices, DEVICE_ID and ASCEND_RT_VISIBLE_DEVICES / "
                       "CUDA_VISIBLE_DEVICES.", group="launch", grammar=DEVICES)
    rank_table_file: str = key("", "An existing HCCL rank table (version 1.0 "
                               "from hccl_tools.py or merge_hccl.py, or 1.2 for Atlas A3 super "
                               "pods), validated and copied byte for byte into the "
                               "run directory as rank_table.json; \"\" = packrun writes one "
                               "(launcher rank_table) or none.", path="file", group="launch",
                               fix="give the rank table file hccl_tools.py / merge_hccl.py / "
                                   "packrun rank-table wrote, or rank_table_file = \"\"")
    rank_table_version: str = key("auto", "HCCL rank table version, following the networking "
                                  "mode: \"1.0\" for AI Server mode (every Ascend server; Atlas "
                                  "A3 outside a super pod), \"1.2\" for Atlas A3 super-pod mode "
                                  "(super_device_id, super_pod_list; written on each server by "
                                  "`packrun rank-table --rank_table_version=1.2` and merged); "
                                  "auto = what npu-smi reports on the node (`npu-smi info -t "
                                  "spod-info`: a super pod means 1.2). An existing "
                                  "rank_table_file must be of this version.",
                                  choices=("auto", "1.0", "1.2"), group="launch")
    node_checks: str = key("error", "Ascend node checks before any rank starts (each node's "
                           "launch, and `packrun check` on the node it runs on): cards present "
                           "and healthy (npu-smi), none held by a process, device-network link "
                           "UP with the rank table's device_ip (hccn_tool), CANN environment "
                           "set. `error` stops the node with exit 2, `warn` only reports, `off` "
                           "skips them.", choices=("error", "warn", "off"), group="launch")
    net_health_check: bool = key(False, "Also require `hccn_tool -i N -net_health -g` to say "
                                 "Success for every card (needs the peers' addresses set with "
                                 "`hccn_tool -netdetect`).", group="launch")
    held_card_wait_s: int = key(60, "On a restart, seconds a node waits for cards still held by "
                                "the job's own previous attempt to be released before judging "
                                "them.", minimum=0, maximum=3600, group="launch")
    hccn_conf: str = key("/etc/hccn.conf", "hccn.conf holding this server's Ascend device IPs "
                         "(`address_N=IP` lines), read for a one-node rank table when device_ips "
                         "is \"\".", group="launch")
    device_ips: str = key("", "Ascend device IPs for the rank table, comma-separated: cards "
                          "0..cards_per_node-1 of node 0, then of node 1, ...; \"\" reads "
                          "hccn_conf (one node only).", group="launch", grammar=IP_LIST)
    # --- Slurm ---------------------------------------------------------------------------------
    partition: str = key("", "Slurm partition; \"\" = the cluster's default.", group="slurm",
                         grammar=SLURM_NAMES)
    account: str = key("", "Slurm account; \"\" = your default.", group="slurm", grammar=SLURM_NAME)
    qos: str = key("", "Slurm quality of service; \"\" = the default.", group="slurm",
                   grammar=SLURM_NAME)
    time: str = key("", "Slurm time limit: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or "
                    "`D-HH:MM:SS`; \"\" = the partition's default.", group="slurm",
                    grammar=SLURM_TIME)
    gres: str = key("", "Slurm generic resources per node, e.g. `gpu:8`; \"\" = "
                    "`gpu:<cards_per_node>` on GPU, none otherwise.", group="slurm", grammar=GRES)
    cpus_per_task: int = key(0, "CPU cores for each node's task (its msrun and all its workers); "
                             "0 = one per worker (cards_per_node) on CPU, and on GPU/Ascend whole "
                             "nodes (--exclusive, --mem=0: every core, all memory).", minimum=0,
                             group="slurm")
    requeue: bool = key(True, "Let Slurm requeue the job after a preemption or node failure.",
                        group="slurm")
    max_restarts: int = key(-1, "Automatic restarts from last.ckpt after a failed launch (a "
                            "dead rank, a node failure); bad input (exit 2) and a user's stop "
                            "are never retried. -1 = 0 for `packrun run` / `debug`, 3 for "
                            "Slurm jobs (each restart is a requeue).", minimum=-1,
                            maximum=100, group="slurm")
    signal_before_s: int = key(120, "Seconds before the time limit at which the batch script gets "
                               "SIGUSR1 (a warning to checkpoint); 0 = no warning.", minimum=0,
                               maximum=65535, group="slurm")
    # --- site customisation (launcher/render/artifacts.py, launcher/node/launch.py) --------
    env_setup: Lines = key((), "Shell lines run in order before the launch, on every node (e.g. "
                           "`source /usr/local/Ascend/ascend-toolkit/set_env.sh`, `module load "
                           "x`): rendered verbatim, not shell-quoted, in the launch scripts.",
                           group="site")
    env: dict = key({}, "Variables exported to every worker, `{NAME = \"value\"}`; the values "
                    "are shell-quoted.", group="site",
                    item=(r"[A-Za-z_][A-Za-z0-9_]*", ("a variable name: letters, digits and _, "
                                                      "not starting with a digit")))
    sbatch_extra: Lines = key((), "Extra `#SBATCH` options for job.sbatch, one per entry (e.g. "
                              "`--constraint=a100`, `--exclusive`), rendered verbatim.",
                              group="site", item=(r"--\S.*", "an sbatch option starting with --"))
    template_dir: str = key("", "A directory of your own templates, searched before packrun's "
                            "(`packrun templates` lists them); \"\" = packrun's only.",
                            path="dir", group="site",
                            fix="give a directory holding templates (packrun templates --copy "
                                "NAME DIR starts one), or template_dir = \"\"")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "JobSpec":
        base = _without_linked(self.to_dict(), changes)
        return build_spec(base | changes, source="replace", check_paths=False)


# ---------------------------------------------------------------------------------------------
# Building a spec from raw values
# ---------------------------------------------------------------------------------------------

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list of strings, e.g. [\"line 1\", \"line 2\"]",
               dict: "a table of strings, e.g. {NAME = \"value\"}"}


def _field_type(f: dataclasses.Field) -> type:
    """The kind of value a key takes in a job file (a `Lines` key is a TOML list)."""
    return {"str": str, "int": int, "float": float, "bool": bool, "Lines": list,
            "dict": dict}[str(f.type)]


def _default(f: dataclasses.Field):
    return f.default_factory() if callable(f.default_factory) else f.default


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _one_line(name: str, text: str, where: str) -> None:
    """Every string a job holds (string keys, list entries, table names and values) is one line
    of printable text: a newline or other control character could end a comment or a quoted
    word of a launch script and start a command."""
    m = _CONTROL.search(text)
    if m:
        what = "a newline" if m.group() in "\n\r\u2028\u2029" else \
            f"the control character {m.group()!r}"
        raise UserError(f"{where}: key '{name}': {text!r} holds {what}; give one line of "
                        "printable text")


def _check_grammar(name: str, value: str, grammar: Grammar, where: str) -> None:
    bad = next((c for c in value if not re.fullmatch(grammar.chars, c)), None)
    if bad is not None:
        raise UserError(f"{where}: key '{name}' is {value!r}: the character {bad!r} is not "
                        f"allowed; {grammar.rule}")
    if not re.fullmatch(grammar.shape, value):
        raise UserError(f"{where}: key '{name}' is {value!r}; {grammar.rule}")


def _coerce_list(name: str, value, where: str, lenient: bool) -> tuple[str, ...] | None:
    """A list key as a tuple of one-line strings (a single string is one entry on the command
    line); None if `value` is no list at all."""
    if lenient and isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return None
    for item in value:
        if not isinstance(item, str):
            raise UserError(f"{where}: key '{name}' must be a list of strings; entry "
                            f"{_describe(item)} is not one (quote it)")
        _one_line(name, item, where)
    return tuple(value)


def _coerce_dict(name: str, value, where: str) -> dict[str, str] | None:
    """A dict key as {name: one-line string} (numbers become strings); None if `value` is no
    table at all."""
    if not isinstance(value, Mapping):
        return None
    out = {}
    for k, v in value.items():
        _one_line(name, str(k), where)
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise UserError(f"{where}: key '{name}': {k} is {_describe(v)}; values are strings, "
                            f"e.g. {k} = \"1\"")
        out[str(k)] = str(v)
        _one_line(name, out[str(k)], where)
    return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else \
        f"{text[:20]}...{text[-8:]} ({len(str(value))} characters)"


def _describe(value) -> str:
    return f"{type(value).__name__} {_short(value)}"


# Numbers as CLI text: ASCII digits only (str.isdigit() also takes '²' and other digits).
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|nan)",
                         re.IGNORECASE)


def _coerce(name: str, value, typ: type, where: str, lenient: bool):
    """Return `value` as `typ` or raise a UserError naming the key. `lenient` accepts what a
    shell flag parser produces (fire turns `--name=2024` into an int, `--flag=false` into a
    string); job files get strict TOML types."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if lenient and isinstance(value, (str, int)) and str(value).lower() in (
                "true", "false", "1", "0", "yes", "no"):
            return str(value).lower() in ("true", "1", "yes")
    elif typ is int:
        if lenient and isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -2 ** 63 <= value < 2 ** 63:
                raise UserError(f"{where}: key '{name}' is {_short(value)}, out of range (a "
                                "64-bit integer)")
            return value
    elif typ is float:
        given = value
        if lenient and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise UserError(f"{where}: key '{name}' must be a finite number, got "
                                f"{_short(given)}")
            return number
    elif typ is list:
        items = _coerce_list(name, value, where, lenient)
        if items is not None:
            return items
    elif typ is dict:
        table = _coerce_dict(name, value, where)
        if table is not None:
            return table
    elif typ is str:
        if isinstance(value, str):
            _one_line(name, value, where)
            return value
        if lenient and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if lenient and isinstance(value, (tuple, list)):
            return ",".join(str(v) for v in value)
    raise UserError(f"{where}: key '{name}' must be {_TYPE_NAMES[typ]}, got {_describe(value)}")


# Names users bring from other tools, and the key packrun calls it.
_SYNONYMS = {"learning_rate": "lr", "base_lr": "lr", "num_epochs": "epochs", "epoch": "epochs",
             "batch": "batch_size", "class_num": "num_classes", "classes": "num_classes",
             "ckpt": "pretrained", "checkpoint": "pretrained", "pretrained_ckpt": "pretrained",
             "device_target": "device", "workers": "cards_per_node", "model": "arch",
             "train_data_path": "train_dir", "val_data_path": "val_dir"}


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, JobSpec.fields(), n=1)
    guess = _SYNONYMS.get(name) if _SYNONYMS.get(name) in JobSpec.fields() else None
    guess = guess or (close[0] if close else None)
    return f" (did you mean '{guess}'?)" if guess else ""


def _check_value(name: str, value, f: dataclasses.Field, where: str):
    m = f.metadata
    if m["choices"] and value not in m["choices"]:
        options = ", ".join(repr(c) for c in m["choices"])
        raise UserError(f"{where}: key '{name}' is {value!r}; choose one of {options}")
    if m["minimum"] is not None and value < m["minimum"]:
        raise UserError(f"{where}: key '{name}' is {value!r}; it must be >= {m['minimum']}")
    if m["maximum"] is not None and value > m["maximum"]:
        raise UserError(f"{where}: key '{name}' is {value!r}; it must be <= {m['maximum']}")
    if m["required"] and value == "":
        raise UserError(f"{where}: key '{name}' is required ({m['doc']})")
    if m["grammar"] and value != "":
        _check_grammar(name, value, m["grammar"], where)
    if m["item"]:
        pattern, meaning = m["item"]
        bad = next((v for v in value if not re.fullmatch(pattern, v)), None)
        if bad is not None:
            raise UserError(f"{where}: key '{name}': {bad!r} is not {meaning}")


def _without_linked(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` minus its mode (freeze) when `changes` sets freeze (mode) alone: the later source
    decides how much is frozen, and the other key follows it."""
    base = dict(base)
    for one, other in (("mode", "freeze"), ("freeze", "mode")):
        if one in changes and other not in changes:
            base.pop(other, None)
    return base


def _mode_and_freeze(mode: str, freeze: str, given: set[str], where: str) -> tuple[str, str]:
    """Resolve the two ways of saying how much is frozen; the one given decides the other."""
    if given == {"mode"}:
        if mode == "partial":
            raise UserError(f"{where}: mode = \"partial\" needs freeze = \"stem\", \"layer1\", "
                            "\"layer2\" or \"layer3\" (how much of the backbone is frozen)")
        return mode, {"finetune": "none", "fixed_feature": "all"}[mode]
    if given == {"freeze"}:
        return mode_of_freeze(freeze), freeze
    if given and mode_of_freeze(freeze) != mode:
        raise UserError(f"{where}: mode = {mode!r} and freeze = {freeze!r} disagree (freeze = "
                        f"{freeze!r} is mode {mode_of_freeze(freeze)!r}); set only one of them")
    return mode, freeze


def _check_relations(spec: JobSpec, where: str):
    if spec.label_smoothing >= 1.0:
        raise UserError(f"{where}: key 'label_smoothing' is {spec.label_smoothing!r}; it must be "
                        "below 1 (0.1 is usual, 0 turns it off)")
    if spec.eval_start_epoch > spec.epochs:
        raise UserError(f"{where}: eval_start_epoch ({spec.eval_start_epoch}) is after the last "
                        f"epoch ({spec.epochs}); nothing would be evaluated. Lower it or raise "
                        "epochs.")
    if spec.warmup_epochs >= spec.epochs:
        raise UserError(f"{where}: warmup_epochs ({spec.warmup_epochs}) must be smaller than "
                        f"epochs ({spec.epochs})")
    if not spec.name or any(c in spec.name for c in "/\\\0") or spec.name.startswith("."):
        raise UserError(f"{where}: key 'name' is {spec.name!r}; use a plain name without '/' "
                        "(it names the run directory)")
    if not spec.head.replace("_", "").replace(".", "").isalnum():
        raise UserError(f"{where}: key 'head' is {spec.head!r}; give the name of the classifier "
                        "cell, e.g. 'end_point'")
    if spec.launcher == "rank_table" and spec.device != "Ascend":
        raise UserError(f"{where}: launcher 'rank_table' starts Ascend cards (HCCL rank tables); "
                        f"device is {spec.device!r}. Use launcher = \"msrun\" or \"mpirun\".")
    if "RANK_TABLE_FILE" in spec.env:
        raise UserError(f"{where}: key 'env' sets RANK_TABLE_FILE; give the table as "
                        f"rank_table_file = {spec.env['RANK_TABLE_FILE']!r} instead (packrun "
                        "validates it and copies it into the run directory, where the launch "
                        "points RANK_TABLE_FILE)")
    if spec.devices:
        if spec.device == "CPU":
            raise UserError(f"{where}: key 'devices' selects GPU/Ascend cards; device is 'CPU' "
                            "(set cards_per_node for the number of CPU workers)")
        devices = parse_devices(spec.devices, f"{where}: key 'devices'")
        if len(devices) != spec.cards_per_node:
            raise UserError(f"{where}: key 'devices' is {spec.devices!r}: {len(devices)} card(s), "
                            f"but cards_per_node = {spec.cards_per_node}; list one card per "
                            "worker")


def check_output_outside_data(spec: JobSpec, out: str | os.PathLike | None = None,
                              what: str = "output_dir") -> None:
    """Run directories inside train_dir or val_dir would become part of the data set."""
    target = Path(out if out is not None else spec.output_dir).expanduser().resolve()
    for key in ("train_dir", "val_dir"):
        data = getattr(spec, key)
        if data and (target == Path(data) or Path(data) in target.parents):
            raise UserError(f"{what} {target} is inside {key} {data}: run directories would "
                            f"become part of the data set; set {what} to a folder outside it")


def _resolve_path(value: str, base: Path) -> str:
    if value == "":
        return value
    return str((base / os.path.expanduser(value)).resolve())


class WrongKind(UserError):
    """A path that exists but is the wrong kind (a file given for a directory, a directory for a
    file, a path under a file): wrong wherever the job runs, unlike a missing one."""


def wrong_kind(value: str, kind: str) -> str | None:
    """Why `value` cannot be the `kind` ("dir" or "file") a key needs although something is
    there: "is a file, not a directory", "is a directory, not a file", "lies under the file X";
    None when it is that kind or does not exist at all."""
    p = Path(value)
    if p.exists():
        if kind == "dir" and not p.is_dir():
            return "is a file, not a directory"
        if kind == "file" and not p.is_file():
            return "is a directory, not a file"
        return None
    for parent in p.parents:
        if parent.exists():
            return None if parent.is_dir() else f"lies under the file {parent}"
    return None


def _check_path(name: str, value: str, kind: str, where: str, fix: str | None = None):
    if value == "" or kind == "out":
        return
    p = Path(value)
    if (kind == "dir" and p.is_dir()) or (kind == "file" and p.is_file()):
        return
    if kind == "dir":
        fix = fix or f"set {name} to the folder that holds one sub-folder per class"
    else:
        fix = fix or f"give a checkpoint file, or {name} = \"\" to train from scratch"
    wrong = wrong_kind(value, kind)
    if wrong:
        raise WrongKind(f"{where}: key '{name}': {value} {wrong}; {fix}")
    raise UserError(f"{where}: key '{name}': {value} does not exist; {fix}")


def path_problems(spec: "JobSpec", where: str = "job") -> list[UserError]:
    """What `check_paths` would refuse (missing data folders, checkpoint), one error each:
    `packrun render` and `check --quick` report a missing one as a warning, since a cluster's
    data often lives where the launch runs, not where it is rendered; a WrongKind (a file given
    as a folder, ...) is an error everywhere."""
    problems: list[UserError] = []
    for name, f in JobSpec.fields().items():
        if f.metadata["path"]:
            try:
                _check_path(name, getattr(spec, name), f.metadata["path"], where,
                            f.metadata["fix"])
            except UserError as e:
                problems.append(e)
    return problems


def build_spec(values: Mapping[str, Any], *, source: str = "job", lenient_keys=(),
               base_dir: Path | None = None, check_paths: bool = True) -> JobSpec:
    """Validate raw key/value pairs into a JobSpec.

    `source` names where the values came from (for messages); keys in `lenient_keys` came from
    CLI flags and accept shell-style spellings. Relative paths resolve against `base_dir`
    (default: the current directory) and are stored absolute, because workers may start in
    another directory or on another host.
    """
    fields = JobSpec.fields()
    unknown = [k for k in values if k not in fields]
    if unknown:
        k = unknown[0]
        where = f"command line: unknown flag --{k}" if k in lenient_keys else \
            f"{source}: unknown key '{k}'"
        raise UserError(f"{where}{_suggest(k)}. Known keys are listed in README.md (Job file "
                        "reference) and by `packrun keys`.")
    base = base_dir or Path.cwd()
    resolved = {}
    for name, f in fields.items():
        if name not in values:
            resolved[name] = _default(f)
            _check_value(name, resolved[name], f, source)
            continue
        where = "command line" if name in lenient_keys else source
        value = _coerce(name, values[name], _field_type(f), where, name in lenient_keys)
        if f.metadata["path"]:
            value = _resolve_path(value, base)
        _check_value(name, value, f, where)
        resolved[name] = value
    given = {k for k in ("mode", "freeze") if k in values}
    where = "command line" if given and given <= set(lenient_keys) else source
    resolved["mode"], resolved["freeze"] = _mode_and_freeze(resolved["mode"], resolved["freeze"],
                                                            given, where)
    spec = JobSpec(**resolved)
    _check_relations(spec, source)
    check_output_outside_data(spec)
    if check_paths:
        for name, f in fields.items():
            if f.metadata["path"]:
                _check_path(name, getattr(spec, name), f.metadata["path"],
                            "command line" if name in lenient_keys else source,
                            f.metadata["fix"])
    return spec


def read_job_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML job file (flat keys; tables only for table-typed keys such as `env`), with
    messages that name the file."""
    p = Path(path)
    if not p.is_file():
        hint = " (it is a directory)" if p.is_dir() else ""
        raise UserError(f"job file {p} not found{hint}; pass a .toml file such as jobs/demo.toml")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UserError(f"job file {p}: cannot read it ({e.strerror})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raise UserError(f"{p}: starts with a UTF-8 byte-order mark (BOM), which TOML does not "
                        "allow; save it as UTF-8 without BOM (e.g. sed -i '1s/^\\xEF\\xBB"
                        "\\xBF//' FILE)")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a text file (UTF-8 expected)") from None
    if isinstance(data.get("sweep"), dict):  # `packrun sweep`'s points (launcher/sweep/plan.py)
        del data["sweep"]
    fields = JobSpec.fields()
    for k, v in data.items():
        if isinstance(v, dict) and not (k in fields and fields[k].type == "dict"):
            raise UserError(f"{p}: [{k}] is a table; job files use flat keys only "
                            f"(write e.g. `epochs = 5` at the top level; only "
                            f"{', '.join(n for n, f in fields.items() if f.type == 'dict')} "
                            "take a table)")
    return data


def load_job(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None,
             check_paths: bool = True) -> JobSpec:
    """Job file + CLI overrides -> validated JobSpec."""
    overrides = dict(overrides or {})
    values = _without_linked(read_job_file(path), overrides)
    return build_spec(values | overrides, source=str(path), lenient_keys=tuple(overrides),
                      check_paths=check_paths)


def reference_markdown() -> str:
    """The job-file reference table for README.md, generated from the declarations."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, f in JobSpec.fields().items():
        m = f.metadata
        default = "(required)" if m["required"] else json.dumps(_default(f))
        doc = m["doc"]
        if m["choices"]:
            doc += " One of " + ", ".join(f"`{c}`" for c in m["choices"]) + "."
        rows.append(f"| `{name}` | {_field_type(f).__name__} | `{default}` | {doc} |")
    return "\n".join(rows) + "\n"
