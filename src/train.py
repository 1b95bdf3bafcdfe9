"""The training worker: `python src/train.py RUN_DIR` (or `python -m src.train RUN_DIR`).

Reads RUN_DIR/job.json (the resolved spec, nothing else), joins the collective when a launcher
started it as one rank of many, and trains. Exit 0 on success, 2 on bad input (one-line message),
1 on anything else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script (msrun takes a file path): import the package, not sibling files.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from launcher.errors import EXIT_USER_ERROR, UserError  # noqa: E402
from launcher.spec import JobSpec, spec_from_json  # noqa: E402


def configure_context(spec: JobSpec) -> None:
    import mindspore as ms
    mode = ms.GRAPH_MODE if spec.graph_mode else ms.PYNATIVE_MODE
    ms.set_context(mode=mode, device_target=spec.device)
    if spec.device != "CPU" and not os.environ.get("MS_ROLE") and not os.environ.get("RANK_TABLE_FILE"):
        ms.set_context(device_id=spec.device_id)


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


def train(spec: JobSpec, run_dir: Path) -> int:
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore import nn
    from mindspore.train import Model

    from src import checkpoint, dataset, parallel
    from src.callbacks import EvalCallBack
    from src.evaluate import evaluate
    from src.lr_schedule import learning_rates

    configure_context(spec)
    amp_level, sink_mode = effective_settings(spec)
    par = parallel.init_parallel()
    ms.set_seed(spec.seed)          # identical initial weights (incl. the new head) on all ranks
    ds.config.set_seed(spec.seed)   # identical shuffle on all ranks, so shards stay disjoint

    classes = dataset.class_names(spec.train_dir)
    if len(classes) != spec.num_classes:
        raise UserError(f"num_classes is {spec.num_classes} but {spec.train_dir} has "
                        f"{len(classes)} class folders ({', '.join(classes)}); set num_classes = "
                        f"{len(classes)}")
    train_ds = dataset.create_dataset(
        spec.train_dir, classes, spec.image_size, spec.batch_size, training=True,
        num_shards=par.world, shard_id=par.rank, num_parallel_workers=spec.num_parallel_workers,
        min_crop_scale=spec.min_crop_scale, hflip=spec.hflip)
    steps = train_ds.get_dataset_size()
    if steps == 0:
        n = len(dataset.image_files(spec.train_dir))
        raise UserError(f"train_dir {spec.train_dir} has {n} images: fewer than one batch "
                        f"(batch_size {spec.batch_size} x {par.world} worker(s)); lower batch_size")
    val_ds = dataset.create_dataset(spec.val_dir, classes, spec.image_size, spec.batch_size,
                                    training=False, num_parallel_workers=spec.num_parallel_workers)

    net = build_network(spec)
    if spec.pretrained:
        report = checkpoint.load_pretrained(net, spec.pretrained, spec.head, spec.arch)
        if par.is_main:
            print(report.summary(), flush=True)
    else:
        checkpoint.head_cell(net, spec.head)  # a wrong head name fails before training
        if par.is_main:
            print("pretrained = \"\": training from scratch", flush=True)
    if spec.mode == "fixed_feature":
        trainable = checkpoint.freeze_backbone(net, spec.head)
        if par.is_main:
            print(f"fixed_feature: training only {', '.join(trainable)}", flush=True)

    rates = learning_rates(spec.lr, spec.lr_schedule, spec.epochs, steps, spec.warmup_epochs)
    lr = rates[0] if spec.lr_schedule == "constant" and spec.warmup_epochs == 0 else \
        ms.Tensor(rates, ms.float32)
    opt = nn.Momentum(params=net.trainable_params(), learning_rate=lr, momentum=spec.momentum,
                      weight_decay=spec.weight_decay)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    model = Model(net, loss, opt, amp_level=amp_level)

    if par.is_main:
        print(f"{spec.arch} {spec.mode}: {len(classes)} classes, {steps} steps/epoch x "
              f"{spec.epochs} epochs, batch {spec.batch_size} x {par.world} worker(s), "
              f"device {spec.device}", flush=True)
    eval_cb = EvalCallBack(
        run_dir=run_dir, epochs=spec.epochs, steps_per_epoch=steps,
        images_per_step=spec.batch_size * par.world,
        evaluate_fn=lambda: evaluate(net, val_ds).accuracy, network=net, is_main=par.is_main,
        eval_interval=spec.eval_interval, eval_start_epoch=spec.eval_start_epoch,
        lr_at=lambda step: rates[min(step, len(rates) - 1)])
    model.train(spec.epochs, train_ds, callbacks=[eval_cb], dataset_sink_mode=sink_mode)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python src/train.py RUN_DIR", file=sys.stderr)
        return EXIT_USER_ERROR
    run_dir = Path(argv[1]).resolve()
    try:
        spec = spec_from_json(run_dir)
        return train(spec, run_dir)
    except UserError as e:
        print(f"packrun: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv))
