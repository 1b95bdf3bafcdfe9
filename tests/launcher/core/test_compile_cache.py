"""The compile cache's store: where it is, the opt-outs, the size bound, who may use it."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from launcher.core import compile_cache as store
from launcher.core.errors import UserError
from launcher.core.rundir.names import (
    COMPILE_CACHE_DIR_ENV,
    COMPILE_CACHE_ENV,
    COMPILE_CACHE_MAX_ENV,
)
from launcher.core.spec import JobSpec

pytestmark = pytest.mark.unit


def test_the_root_is_per_user_xdg_then_home_and_the_variable_wins():
    assert store.settings({"HOME": "/home/u"}).root == Path("/home/u/.cache/packrun/compile")
    assert store.settings({"HOME": "/home/u", "XDG_CACHE_HOME": "/x"}).root == \
        Path("/x/packrun/compile")
    assert store.settings({"HOME": "/home/u", "XDG_CACHE_HOME": "/x",
                           COMPILE_CACHE_DIR_ENV: "/shared/me"}).root == Path("/shared/me")


@pytest.mark.parametrize("env, job, why", [
    ({COMPILE_CACHE_ENV: "0"}, True, f"{COMPILE_CACHE_ENV}=0"),
    ({COMPILE_CACHE_ENV: "off"}, True, f"{COMPILE_CACHE_ENV}=off"),
    ({}, False, "compile_cache = false in the job"),
    ({COMPILE_CACHE_MAX_ENV: "0"}, True, f"{COMPILE_CACHE_MAX_ENV}=0"),
])
def test_opting_out(env, job, why):
    s = store.settings({"HOME": "/h", **env}, job)
    assert s.root is None and s.why == why


def test_the_size_bound_defaults_to_2_gib_and_a_bad_one_is_bad_input():
    assert store.settings({"HOME": "/h"}).max_bytes == 2 * 2**30
    assert store.settings({"HOME": "/h", COMPILE_CACHE_MAX_ENV: "0.5"}).max_bytes == 2**29
    for bad in ("lots", "-1", "nan"):
        with pytest.raises(UserError, match=f"{COMPILE_CACHE_MAX_ENV}='{bad}' is not a size"):
            store.settings({"HOME": "/h", COMPILE_CACHE_MAX_ENV: bad})


def test_the_root_is_made_private_and_a_shared_one_refused(tmp_path):
    root = tmp_path / "a" / "compile"
    assert store.prepare_root(root) == ""
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    root.chmod(0o777)
    assert "writable by other users (mode 777)" in store.prepare_root(root)
    root.chmod(0o700)
    (tmp_path / "file").write_text("")
    assert "File exists" in store.prepare_root(tmp_path / "file")


def test_a_root_of_another_user_is_refused(tmp_path):
    root = tmp_path / "theirs"
    root.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(root, 65534, 65534)
        assert "belongs to another user (uid 65534)" in store.prepare_root(root)
    else:  # a user cannot give a directory away; theirs is anything not ours
        assert store.prepare_root(Path("/")) != ""


def test_the_key_ignores_names_paths_and_launch_settings_but_nothing_else():
    base = JobSpec().to_dict()
    key = store.cache_key({"spec": store.spec_part(base)})
    harmless = dict(name="other", train_dir="/elsewhere", pretrained="x.ckpt", output_dir="/o",
                    max_restarts=3, compile_cache=False, tensorboard=False, log_every_steps=1,
                    stall_timeout=20, startup_timeout=60, node_checks="off",
                    min_crop_scale=0.3, hflip=False, num_parallel_workers=1,
                    launcher="mpirun", env={"NCCL_DEBUG": "INFO", "PACKRUN_TEST_FAULT": "x"})
    assert store.cache_key({"spec": store.spec_part(base | harmless)}) == key
    for k, v in dict(image_size=64, batch_size=3, arch="resnet18", num_classes=7,
                     freeze="layer2", cpu_conv="native", graph_mode=False, weight_decay=0.1,
                     head_lr_mult=10.0, env={"MS_DEV_X": "1"}).items():
        assert store.cache_key({"spec": store.spec_part(base | {k: v})}) != key, k
    # a job key not listed as harmless is in the key: a new key can only cause a miss
    assert "some_future_key" in store.spec_part(base | {"some_future_key": 1})
    assert store.env_part({"MS_DEV_GRAPH_KERNEL_FLAGS": "x", "HOME": "/h"}) == \
        {"MS_DEV_GRAPH_KERNEL_FLAGS": "x"}


def test_the_feature_cache_keys_count_only_where_they_act():
    # finetune (nothing frozen): no feature cache runs, whatever its keys say
    finetune = JobSpec().to_dict() | {"freeze": "none"}
    key = store.cache_key({"spec": store.spec_part(finetune)})
    for k, v in dict(feature_cache="off", cache_views=5, cache_max_gib=0.0).items():
        assert store.cache_key({"spec": store.spec_part(finetune | {k: v})}) == key, k
    # a frozen prefix: the mode always counts, the views only for augmented views, the bound
    # (cache or recompute) wherever a cache is made
    frozen = JobSpec().to_dict() | {"freeze": "layer2"}
    acts = {"off": {"cache_views": False, "cache_max_gib": False},
            "eval": {"cache_views": False, "cache_max_gib": True},
            "augmented": {"cache_views": True, "cache_max_gib": True}}
    keys = set()
    for mode, counted in acts.items():
        spec = frozen | {"feature_cache": mode}
        key = store.cache_key({"spec": store.spec_part(spec)})
        keys.add(key)
        for k, v in dict(cache_views=5, cache_max_gib=0.0).items():
            changed = store.cache_key({"spec": store.spec_part(spec | {k: v})})
            assert (changed != key) == counted[k], (mode, k)
    assert len(keys) == 3


def test_the_learning_rate_is_a_value_except_for_a_schedule_in_the_graph():
    # a constant lr, and on CPU in GRAPH_MODE any schedule (the host sets each step's rate), is
    # a Parameter's value (tests/src/training/test_lr_schedule.py: the same weights as the
    # schedule in the graph; tests/src/training/test_compile_cache.py: runs with another lr,
    # schedule and epochs reuse the graphs); elsewhere a schedule is a per-step tensor in the
    # graph, epochs x steps long
    def key(spec):
        return store.cache_key({"spec": store.spec_part(spec)})

    lr_keys = dict(lr=0.5, epochs=9, scale_lr=True, warmup_epochs=2)
    constant = {"lr_schedule": "constant", "warmup_epochs": 0}
    for device in ("CPU", "GPU", "Ascend"):
        for graph in (True, False):
            spec = JobSpec().to_dict() | {"device": device, "graph_mode": graph} | constant
            assert key(spec | {"lr": 0.5, "epochs": 9, "scale_lr": True}) == key(spec)
            from_host = store.schedule_from_host(device, graph)
            assert from_host == (device == "CPU" and graph)
            for varied in ({"lr_schedule": "cosine"}, {"warmup_epochs": 1}):
                scheduled = spec | varied
                assert (key(scheduled) == key(spec)) == from_host, (device, graph, varied)
                for k, v in lr_keys.items():
                    same = key(scheduled | {k: v}) == key(scheduled)
                    assert same == from_host, (device, graph, varied, k)


def test_momentum_and_the_evaluation_timing_are_values():
    # nn.Momentum holds the momentum in a Parameter; when evaluation runs is no graph's business
    spec = JobSpec().to_dict()
    key = store.cache_key({"spec": store.spec_part(spec)})
    for k, v in dict(momentum=0.5, eval_interval=3, eval_start_epoch=4).items():
        assert store.cache_key({"spec": store.spec_part(spec | {k: v})}) == key, k
    for k, v in dict(weight_decay=0.1, batch_size=3, image_size=48, seed=7).items():
        assert store.cache_key({"spec": store.spec_part(spec | {k: v})}) != key, k


def entry(root: Path, name: str, size: int, age_s: float) -> Path:
    d = root / name / "rank_0" / "graph_cache"
    d.mkdir(parents=True)
    (d / "compile_cache_0.mindir").write_bytes(b"x" * size)
    t = time.time() - age_s
    os.utime(root / name, (t, t))
    return root / name


def test_cleanup_drops_least_recently_used_entries_down_to_the_bound(tmp_path):
    for name, age in (("old", 300), ("mid", 200), ("new", 100)):
        entry(tmp_path, name, 1000, age)
    assert store.cleanup(tmp_path, 2500) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid", "new"]
    store.touch(tmp_path / "mid")  # used now: "new" is the older one
    assert store.cleanup(tmp_path, 1000) == ["new"]
    assert store.cleanup(tmp_path, 0, keep="mid") == []  # the entry in use stays
    assert [p.name for p in tmp_path.iterdir()] == ["mid"]


def test_cleanup_removes_killed_workers_copies_and_half_deleted_entries(tmp_path):
    work = tmp_path / store.WORK
    (work / "k-1-old").mkdir(parents=True)
    (work / "k-2-live").mkdir()
    old = time.time() - store.STALE_WORK_S - 10
    os.utime(work / "k-1-old", (old, old))
    (tmp_path / f"{store.TRASH}-k-9-1").mkdir()
    store.cleanup(tmp_path, 2**30)
    assert [p.name for p in work.iterdir()] == ["k-2-live"]
    assert not list(tmp_path.glob(f"{store.TRASH}*"))


def test_the_worker_never_reads_how_the_ranks_spread_over_nodes():
    # nodes and cards_per_node are out of the key (the world size is in it) because no graph
    # can depend on what the worker never reads
    from launcher.core.paths import REPO
    readers = [p for p in (REPO / "src").rglob("*.py")
               for name in ("nodes", "cards_per_node") if f".{name}" in p.read_text()]
    assert readers == [], readers
    assert {"nodes", "cards_per_node"} <= store.NOT_IN_KEY
