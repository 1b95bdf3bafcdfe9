"""The training worker: `python src/train.py RUN_DIR` (or `python -m src.train RUN_DIR`).

Reads RUN_DIR/job.json (the resolved spec, nothing else), joins the collective when a launcher
started it as one rank of many, and trains. Exit 0 on success, 2 on bad input (one-line message),
1 on anything else.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script (msrun takes a file path): import the package, not sibling files.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from launcher.errors import EXIT_USER_ERROR, UserError  # noqa: E402
from launcher import ranks  # noqa: E402
from launcher.rundir import write_atomic  # noqa: E402
from launcher.runfiles import (CLASSES_JSON, EXIT_REQUEUE, LAST_CKPT, LOGS,  # noqa: E402
                               PREEMPT_FLAG, worker_exit)
from launcher.spec import JobSpec, spec_from_json  # noqa: E402


def configure_context(spec: JobSpec) -> None:
    import mindspore as ms
    mode = ms.GRAPH_MODE if spec.graph_mode else ms.PYNATIVE_MODE
    ms.set_context(mode=mode, device_target=spec.device)
    if spec.device != "CPU" and not ranks.joins_a_collective(os.environ):
        ms.set_context(device_id=spec.device_id)  # launchers assign cards to their ranks


def effective_settings(spec: JobSpec) -> tuple[str, bool]:
    """(amp_level, sink_mode) as they will run, telling the user what CPU cannot do."""
    amp, sink = spec.amp_level, spec.sink_mode
    if spec.device == "CPU":
        if amp != "O0":
            print(f"note: amp_level {amp} needs Ascend/GPU; CPU runs O0", flush=True)
        if sink:
            print("note: dataset sink mode is Ascend/GPU only; CPU runs without sink", flush=True)
        return "O0", False
    return amp, sink


def build_network(spec: JobSpec):
    from src.resnet import build_resnet
    return build_resnet(spec.arch, spec.num_classes,
                        cpu_conv=(spec.device == "CPU" and spec.cpu_conv == "im2col"))


def weights_digest(params) -> str:
    import hashlib
    h = hashlib.sha256()
    for p in params:
        h.update(p.name.encode())
        h.update(p.asnumpy().tobytes())
    return h.hexdigest()[:16]


def resumable_parameters(net, opt) -> list:
    """What last.ckpt holds: the network and the optimizer's state (moments, global_step,
    learning-rate schedule), each parameter once."""
    seen, params = set(), []
    for p in list(net.get_parameters()) + list(opt.get_parameters()):
        if p.name not in seen:
            seen.add(p.name)
            params.append({"name": p.name, "data": p})
    return params


def resume_from(run_dir: Path, net, opt) -> tuple[int, list[dict]]:
    """(last completed epoch, metrics history up to it) from RUN_DIR/last.ckpt; (0, []) when
    the run starts fresh."""
    import mindspore as ms

    from launcher.metrics import read_metrics
    from src.checkpoint import read_checkpoint
    path = run_dir / LAST_CKPT
    if not path.exists():
        return 0, []
    state = read_checkpoint(path)
    epoch = int(state.pop("epoch").asnumpy())
    ms.load_param_into_net(net, state)
    ms.load_param_into_net(opt, state)
    return epoch, [r for r in read_metrics(run_dir) if r["epoch"] <= epoch]


def train(spec: JobSpec, run_dir: Path) -> int:
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore import nn
    from mindspore.train import Model

    from src import checkpoint, collective, dataset, feature_cache, parallel, transfer
    from src.callbacks import EvalCallBack
    from src.evaluate import evaluate
    from src.lr_schedule import learning_rates

    configure_context(spec)
    amp_level, sink_mode = effective_settings(spec)
    par = parallel.init_parallel()
    say = (lambda msg: print(msg, flush=True)) if par.is_main else (lambda msg: None)
    ms.set_seed(spec.seed)  # identical initial weights (incl. the new head) on every rank

    classes = dataset.class_names(spec.train_dir)
    if len(classes) != spec.num_classes:
        raise UserError(f"num_classes is {spec.num_classes} but {spec.train_dir} has "
                        f"{len(classes)} class folders ({', '.join(classes)}); set num_classes = "
                        f"{len(classes)}")
    n_train = dataset.count_images(spec.train_dir)
    steps = n_train // par.world // spec.batch_size
    if steps == 0:
        raise UserError(f"train_dir {spec.train_dir} has {n_train} images: fewer than one batch "
                        f"(batch_size {spec.batch_size} x {par.world} worker(s)); lower batch_size")
    data_args = dict(classes=classes, image_size=spec.image_size, batch_size=spec.batch_size,
                     num_parallel_workers=spec.num_parallel_workers)

    def train_data(epoch: int | None):
        """Epoch `epoch`'s shard: data order and augmentation depend on (seed, epoch) only, so
        a resumed run sees the same data as an uninterrupted one. None: one pipeline for every
        epoch (sink mode), reshuffled within a fixed shard."""
        ds.config.set_seed(spec.seed * 100003 + (epoch or 0))
        indices = dataset.shard_indices(n_train, par.world, par.rank, spec.seed, epoch or 1)
        return dataset.create_dataset(spec.train_dir, training=True, indices=indices,
                                      reshuffle=epoch is None, min_crop_scale=spec.min_crop_scale,
                                      hflip=spec.hflip, **data_args)

    sharded_eval = spec.eval_mode == "sharded" and par.world > 1
    val_indices = None
    if sharded_eval:
        val_indices = dataset.shard_indices(dataset.count_images(spec.val_dir), par.world,
                                            par.rank, spec.seed, None)
    val_ds = dataset.create_dataset(spec.val_dir, training=False, indices=val_indices, **data_args)

    def validation_accuracy() -> float:
        result = cache.evaluate() if cache else evaluate(net, val_ds)
        correct, total = collective.allreduce_sum([result.correct, result.total],
                                                  par.world if sharded_eval else 1)
        return float(correct) / float(total) if total else 0.0

    net = build_network(spec)
    if spec.pretrained:
        report = checkpoint.load_pretrained(net, spec.pretrained, spec.head, spec.arch)
        say(report.summary())
    else:
        checkpoint.head_cell(net, spec.head)  # a wrong head name fails before training
        say("pretrained = \"\": training from scratch")
    say(transfer.apply_freeze(net, spec.freeze, spec.head).summary())
    if par.is_main:  # export and predict name the classes without the data
        write_atomic(run_dir / CLASSES_JSON, json.dumps(classes) + "\n")
    cache = None
    if spec.freeze != "none" and spec.feature_cache != "off":
        cache = feature_cache.build(spec, par, net, n_train, val_indices, val_ds, data_args, say)
    if cache:
        steps, sink_mode = cache.steps_per_epoch, False
        train_data = cache.train_dataset  # noqa: F811 (the rest trains on cached activations)

    base_lr = spec.lr * (par.world if spec.scale_lr else 1)
    rates = learning_rates(base_lr, spec.lr_schedule, spec.epochs, steps, spec.warmup_epochs)
    lr = rates[0] if spec.lr_schedule == "constant" and spec.warmup_epochs == 0 else \
        ms.Tensor(rates, ms.float32)
    opt = nn.Momentum(params=transfer.parameter_groups(net, spec.head, lr, spec.head_lr_mult),
                      learning_rate=lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    loss = transfer.loss_fn(spec.label_smoothing)
    model = Model(cache.network if cache else net, loss, opt, amp_level=amp_level)

    start_epoch, history = resume_from(run_dir, net, opt)
    agreed = collective.allreduce_sum([start_epoch], par.world)[0]
    if agreed != start_epoch * par.world:
        raise UserError(f"ranks disagree on the epoch to resume from ({LAST_CKPT} in {run_dir} is "
                        "not the same file on every node): the run directory must be on storage "
                        "shared by all nodes")
    if start_epoch:
        say(f"resuming from {run_dir / LAST_CKPT}: epoch {start_epoch} of {spec.epochs} done")
    say(f"{spec.arch} {spec.mode}: {len(classes)} classes, {steps} steps/epoch x {spec.epochs} "
        f"epochs, batch {spec.batch_size} x {par.world} worker(s), lr {base_lr:g}"
        f"{f' (head x {spec.head_lr_mult:g})' if spec.head_lr_mult != 1 else ''}"
        f"{f', label smoothing {spec.label_smoothing:g}' if spec.label_smoothing else ''}, "
        f"device {spec.device}")
    flag = run_dir / PREEMPT_FLAG
    bn_statistics = transfer.updating_bn_statistics(net)  # frozen ones agree on every rank
    eval_cb = EvalCallBack(
        run_dir=run_dir, epochs=spec.epochs, steps_per_epoch=steps,
        images_per_step=spec.batch_size * par.world, evaluate_fn=validation_accuracy,
        network=net, is_main=par.is_main, eval_on_all_ranks=sharded_eval,
        eval_interval=spec.eval_interval, eval_start_epoch=spec.eval_start_epoch,
        lr_at=lambda step: rates[min(step, len(rates) - 1)],
        should_stop=lambda: collective.any_rank(flag.exists(), par.world),
        end_of_epoch_sync=lambda: collective.average_parameters(bn_statistics, par.world),
        resume_state=lambda: resumable_parameters(net, opt), history=history)
    if sink_mode and start_epoch < spec.epochs:
        model.train(spec.epochs, train_data(None), callbacks=[eval_cb], dataset_sink_mode=True,
                    initial_epoch=start_epoch)
    else:
        for epoch in range(start_epoch + 1, spec.epochs + 1):
            eval_cb.epoch_offset = epoch - 1
            model.train(1, train_data(epoch), callbacks=[eval_cb], dataset_sink_mode=False)
            if eval_cb.stopped_at:
                break
    if eval_cb.stopped_at:
        epoch, step = eval_cb.stopped_at
        say(f"stopped on request ({flag.name}) at epoch {epoch} step {step}; "
            f"{LAST_CKPT} holds epoch {epoch - 1}: start the run again to resume")
        return EXIT_REQUEUE
    say(eval_cb.closing_line())
    # Every rank prints it: equal digests mean the ranks ended with identical weights.
    print(f"rank {par.rank}: final weights sha256 {weights_digest(net.trainable_params())}, "
          f"batchnorm statistics sha256 {weights_digest(net.untrainable_params())}", flush=True)
    if par.is_main:  # predictions/curves/confusion PNGs; failures there only warn
        from src.run_pictures import make_run_pictures
        full_val = val_ds if val_indices is None else \
            dataset.create_dataset(spec.val_dir, training=False, **data_args)
        make_run_pictures(spec, run_dir, net, full_val, classes)
    return 0


def run(run_dir: Path) -> int:
    try:
        return train(spec_from_json(run_dir), run_dir)
    except UserError as e:
        print(f"packrun: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


def main(argv: list[str]) -> int:
    """Run, and leave logs/worker_<rank>.exit behind with the exit status, so that the
    supervisor tells a worker that failed from one that finished (and a killed one, which
    leaves none, from both)."""
    if len(argv) != 2:
        print("usage: python src/train.py RUN_DIR", file=sys.stderr)
        return EXIT_USER_ERROR
    run_dir = Path(argv[1]).resolve()
    rank = ranks.rank_from_env(os.environ)
    code = 1
    try:
        code = run(run_dir)
    finally:
        if rank is not None and (run_dir / LOGS).is_dir():
            write_atomic(run_dir / worker_exit(rank), f"{code}\n")
    if code in (0, EXIT_REQUEUE) and rank is not None and ranks.joins_a_collective(os.environ):
        # Leave together: msrun kills the other workers as soon as one exits non-zero (75), and
        # its scheduler then waits ~30 s for them; after this barrier all have written their
        # exit status and exit within moments of each other.
        from src.collective import allreduce_sum
        allreduce_sum([0], ranks.world_from_env(os.environ))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
