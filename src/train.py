"""The training worker: `python src/train.py RUN_DIR` (or `python -m src.train RUN_DIR`).

Reads RUN_DIR/job.json (the resolved spec, nothing else), joins the collective when a launcher
started it as one rank of many, and trains. Exit 0 on success, 2 on bad input (one-line message),
1 on anything else.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script (msrun takes a file path): import the package, not sibling files.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from launcher.core import rank_env as ranks
from launcher.core.cores import format_cpulist
from launcher.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from launcher.core.quick_exit import leave
from launcher.core.rundir.atomic import write_atomic
from launcher.core.rundir.failure import write_worker_error
from launcher.core.rundir.job_json import spec_from_json
from launcher.core.rundir.metrics import read_metrics
from launcher.core.rundir.names import (
    ATTEMPT_ENV,
    CLASSES_JSON,
    EXIT_REQUEUE,
    JOB_JSON,
    LAST_CKPT,
    LOGS,
    PREEMPT_FLAG,
    STACK_SIGNAL_NAME,
    worker_exit,
    worker_pid,
    worker_stack,
)
from launcher.core.spec import JobSpec, sharded_evaluation


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
    from src.model.resnet import build_resnet
    return build_resnet(spec.arch, spec.num_classes,
                        cpu_conv=(spec.device == "CPU" and spec.cpu_conv == "im2col"))


def weights_digest(params) -> str:
    import hashlib
    h = hashlib.sha256()
    for p in params:
        h.update(p.name.encode())
        h.update(p.asnumpy().tobytes())
    return h.hexdigest()[:16]


def counted(n: int, word: str) -> str:
    """`1 step`, `36 steps`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def resumable_parameters(net, opt) -> list:
    """What last.ckpt holds: the network and the optimizer's state (moments, global_step,
    learning-rate schedule), each parameter once."""
    seen, params = set(), []
    for p in list(net.get_parameters()) + list(opt.get_parameters()):
        if p.name not in seen:
            seen.add(p.name)
            params.append({"name": p.name, "data": p})
    return params


@dataclass
class ResumePoint:
    """Where a run continues: `epoch` epochs done, `step` steps of the next one done (a stop
    mid-epoch), the metrics rows up to `epoch`, and the interrupted epoch's record."""
    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    partial: object = None  # src.training.callbacks.EpochRecord of the interrupted epoch


def resume_from(run_dir: Path, net, opt, rank: int = 0) -> ResumePoint:
    """The ResumePoint RUN_DIR/last.ckpt describes, its weights loaded into `net` and `opt`
    (and this rank's own BatchNorm statistics after a mid-epoch stop); an empty ResumePoint when
    the run starts fresh."""
    import mindspore as ms

    from src.training.callbacks import EpochRecord
    from src.training.checkpoint import read_checkpoint
    path = run_dir / LAST_CKPT
    if not path.exists():
        return ResumePoint()
    state = read_checkpoint(path, fix=(
        "it was cut short or damaged after it was written (saves are atomic); restore it, or "
        "delete it to start this run again from epoch 1"))
    if "epoch" not in state:
        raise UserError(f"{path} holds no epoch counter: it is not a packrun {LAST_CKPT}; "
                        "delete it to start this run again from epoch 1")
    wrong = [(p.name, tuple(state[p.name].shape), tuple(p.shape))
             for p in net.get_parameters()
             if p.name in state and tuple(state[p.name].shape) != tuple(p.shape)]
    missing = [p.name for p in net.get_parameters() if p.name not in state]
    if wrong or missing:
        what = (f"{wrong[0][0]} is {wrong[0][1]} there, {wrong[0][2]} in the network" if wrong
                else f"it lacks {missing[0]}")
        raise UserError(f"{path} does not fit the job in {run_dir / JOB_JSON} "
                        f"({len(wrong)} parameter(s) of another shape, {len(missing)} missing; "
                        f"e.g. {what}): job.json was changed after the run started (arch, "
                        "num_classes, head?). Restore job.json, or start a new run")
    epoch = int(state.pop("epoch").asnumpy())
    step = int(state.pop("step").asnumpy()) if "step" in state else 0
    partial = None
    if step:
        losses = [float(x) for x in state.pop("epoch_losses").asnumpy()]
        partial = EpochRecord(losses, float(state.pop("epoch_train_time_s").asnumpy()))
        mine = f"{RANK_STATE_PREFIX}{rank}."
        state |= {k[len(mine):]: v for k, v in state.items() if k.startswith(mine)}
    ms.load_param_into_net(net, state)
    own = opt.parameters_dict()
    for name in [n for n in state if n.startswith("learning_rate") and n in own and
                 tuple(state[n].shape) != tuple(own[n].shape)]:
        # the schedule kept in its other form (in the graph, or set from the host: an older
        # packrun, another sink mode): the job's schedule gives the rate of every step anyway
        state[name] = own[name]
    ms.load_param_into_net(opt, state)
    return ResumePoint(epoch, step, [r for r in read_metrics(run_dir) if r["epoch"] <= epoch],
                       partial)


RANK_STATE_PREFIX = "rank_state."  # last.ckpt entries "rank_state.<rank>.<parameter>"


def rank_state(params, par) -> dict:
    """Every rank's own values of `params` (BatchNorm statistics), gathered on every rank
    exactly (each rank fills its slot of a zero array; the sum over ranks adds only zeros)."""
    import numpy as np

    from src.training import collective
    if par.world <= 1 or not params:
        return {}
    out = {}
    for p in params:
        slots = np.zeros((par.world,) + tuple(p.shape), np.float32)
        slots[par.rank] = p.asnumpy()
        gathered = collective.allreduce_sum(slots, par.world)
        out |= {f"{RANK_STATE_PREFIX}{r}.{p.name}": gathered[r] for r in range(par.world)}
    return out


def sink_chunks(first_step: int, steps: int, sink_size: int) -> list[tuple[int, int]]:
    """Sink mode: (sink_size, chunks) calls of Model.train that run steps first_step+1..steps
    of an epoch in chunks of at most sink_size steps (a stop request is seen between chunks)."""
    remaining = steps - first_step
    size = min(sink_size, remaining)
    whole, rest = divmod(remaining, size) if size else (0, 0)
    return [c for c in ((size, whole), (rest, 1)) if c[0] and c[1]]


@dataclass
class Data:
    """The job's data as this rank sees it: classes, steps per epoch, the validation set and
    the per-epoch training shard (`train_data`)."""
    spec: JobSpec
    par: object
    classes: list
    n_train: int
    steps: int
    data_args: dict
    val_indices: list | None
    val_ds: object
    sharded_eval: bool

    def train_data(self, epoch: int):
        """Epoch `epoch`'s shard: data order and augmentation depend on (seed, epoch) only, so
        a resumed run sees the same data as an uninterrupted one."""
        import mindspore.dataset as ds

        from src.data import dataset
        from src.training import seeds
        spec, par = self.spec, self.par
        ds.config.set_seed(seeds.derived_seed(spec.seed, seeds.EPOCH, epoch))
        indices = dataset.shard_indices(self.n_train, par.world, par.rank, spec.seed, epoch)
        return dataset.create_dataset(spec.train_dir, training=True, indices=indices,
                                      min_crop_scale=spec.min_crop_scale, hflip=spec.hflip,
                                      **self.data_args)

    def val_args(self) -> dict:
        """data_args with the evaluation batch (eval_batch_size, else batch_size)."""
        return self.data_args | {"batch_size": self.spec.eval_batch_size or self.spec.batch_size}


def prepare_data(spec: JobSpec, par) -> Data:
    """Classes (checked against num_classes), steps per epoch, the validation set."""
    from src.data import dataset
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
                     num_parallel_workers=dataset.pipeline_workers(spec.num_parallel_workers))
    sharded_eval = sharded_evaluation(spec.eval_mode, par.world)
    # every rank, in its own log: the cores the launch bound it to (bind_cores), where it runs
    print(f"rank {par.rank}: cores {format_cpulist(dataset.usable_cores())} "
          f"({len(dataset.usable_cores())}), {data_args['num_parallel_workers']} data pipeline "
          f"worker(s), working directory {os.getcwd()}, evaluation "
          f"{'sharded' if sharded_eval else 'on rank 0'}", flush=True)
    val_indices = None
    if sharded_eval:
        val_indices = dataset.shard_indices(dataset.count_images(spec.val_dir), par.world,
                                            par.rank, spec.seed, None)
    data = Data(spec, par, classes, n_train, steps, data_args, val_indices, None, sharded_eval)
    data.val_ds = dataset.create_dataset(spec.val_dir, training=False, indices=val_indices,
                                         **data.val_args())
    return data


def prepare_network(spec: JobSpec, run_dir: Path, par, data: Data, say, recorder=None):
    """The network with the pretrained backbone (or from scratch), frozen up to `freeze`, and
    the feature cache of the frozen prefix when the job uses one: (net, cache or None)."""
    from src.training import checkpoint, feature_cache, transfer
    net = build_network(spec)
    if spec.pretrained:
        report = checkpoint.load_pretrained(net, spec.pretrained, spec.head, spec.arch)
        say(report.summary())
    else:
        checkpoint.head_cell(net, spec.head)  # a wrong head name fails before training
        say("pretrained = \"\": training from scratch")
    say(transfer.apply_freeze(net, spec.freeze, spec.head).summary())
    if par.is_main:  # export and predict name the classes without the data
        write_atomic(run_dir / CLASSES_JSON, json.dumps(data.classes) + "\n")
    cache = None
    if spec.freeze != "none" and spec.feature_cache != "off":
        cache = feature_cache.build(spec, par, net, data.n_train, data.val_indices, data.val_ds,
                                    data.data_args, say, recorder)
    return net, cache


def build_optimizer(spec: JobSpec, par, net, steps: int):
    """(optimizer, per-step learning rates, base lr, the StepRates callback that sets a schedule's
    rate before each step, or None). A schedule is set from the host on CPU in GRAPH_MODE, else
    it is in the graph (src/training/lr_schedule.py)."""
    import mindspore as ms
    from mindspore import nn

    from launcher.core.compile_cache import constant_lr, schedule_from_host
    from src.training import transfer
    from src.training.lr_schedule import StepRates, learning_rates
    base_lr = spec.lr * (par.world if spec.scale_lr else 1)
    rates = learning_rates(base_lr, spec.lr_schedule, spec.epochs, steps, spec.warmup_epochs)
    constant = constant_lr(spec.lr_schedule, spec.warmup_epochs)
    host = not constant and schedule_from_host(spec.device, spec.graph_mode)
    lr = rates[0] if constant or host else ms.Tensor(rates, ms.float32)
    groups = transfer.parameter_groups(net, spec.head, lr, spec.head_lr_mult)
    opt = nn.Momentum(params=groups, learning_rate=lr, momentum=spec.momentum,
                      weight_decay=spec.weight_decay)
    step_rates = StepRates(opt, rates, transfer.group_multipliers(groups, spec.head_lr_mult)) \
        if host else None
    return opt, rates, base_lr, step_rates


def resume_agreed(run_dir: Path, net, opt, par) -> ResumePoint:
    """resume_from, checked to be the same point on every rank (a shared run directory)."""
    from src.training import collective
    point = resume_from(run_dir, net, opt, par.rank)
    agreed = collective.allreduce_sum([point.epoch, point.step], par.world)
    if list(agreed) != [point.epoch * par.world, point.step * par.world]:
        raise UserError(f"ranks disagree on the epoch to resume from ({LAST_CKPT} in {run_dir} is "
                        "not the same file on every node): the run directory must be on storage "
                        "shared by all nodes")
    return point


@dataclass
class Callbacks:
    report: object
    stop: object
    checkpoint: object
    position: object
    before: list = field(default_factory=list)  # test-only (src/testing/faults.py): fault injection
    after: list = field(default_factory=list)   # test-only: the step trace
    cache: list = field(default_factory=list)   # the compile cache's keep after the first step
    schedule: list = field(default_factory=list)  # a schedule's rate set before each step

    def all(self) -> list:
        return [*self.schedule, *self.before, self.report, self.stop, self.checkpoint,
                *self.cache, *self.after]


def make_callbacks(spec: JobSpec, run_dir: Path, par, data: Data, net, opt, rates, steps: int,
                   evaluate_fn, resume: ResumePoint, recorder, best=None) -> Callbacks:
    """`best` (src/training/evaluate.BestEvaluation): told when best.ckpt is saved."""
    from src.testing import faults
    from src.training import collective, transfer
    from src.training.callbacks import Checkpoint, Evaluation, Position, Report, StopOnRequest
    flag = run_dir / PREEMPT_FLAG
    bn_statistics = transfer.updating_bn_statistics(net)  # frozen ones agree on every rank
    position = Position(steps)
    report = Report(
        run_dir=run_dir, epochs=spec.epochs, images_per_step=spec.batch_size * par.world,
        position=position, is_main=par.is_main, history=resume.history, partial=resume.partial,
        evaluation=Evaluation(evaluate_fn, data.sharded_eval, spec.eval_interval,
                              spec.eval_start_epoch),
        lr_at=lambda step: rates[min(step, len(rates) - 1)],
        end_of_epoch_sync=lambda: collective.average_parameters(bn_statistics, par.world),
        recorder=recorder)
    stop = StopOnRequest(lambda: collective.any_rank(flag.exists(), par.world), position)
    ckpt = Checkpoint(run_dir=run_dir, network=net, is_main=par.is_main, report=report,
                      resume_state=lambda: resumable_parameters(net, opt),
                      rank_state=lambda: rank_state(bn_statistics, par),
                      **({"on_best": best.keep} if best is not None else {}))
    return Callbacks(report, stop, ckpt, position,
                     *faults.from_env(os.environ, par.rank, position, run_dir))


def fit(spec: JobSpec, model, train_data, cbs: Callbacks, resume: ResumePoint,
        sink_mode: bool) -> None:
    """The epoch loop from the resume point: one Model.train per epoch (sink mode: per chunk of
    sink_size steps), each on that epoch's data with the steps done before a stop skipped."""
    position = cbs.position
    for epoch in range(resume.epoch + 1, spec.epochs + 1):
        first = resume.step if epoch == resume.epoch + 1 else 0
        position.begin_epoch(epoch, first)
        data = train_data(epoch)
        if first:
            data = data.skip(first)
        if not sink_mode:
            model.train(1, data, callbacks=cbs.all(), dataset_sink_mode=False)
        else:
            for size, chunks in sink_chunks(first, position.steps_per_epoch, spec.sink_size):
                position.skipped = position.step
                model.train(chunks, data.take(size * chunks), callbacks=cbs.all(),
                            dataset_sink_mode=True, sink_size=size)
                if position.stopped_at:
                    break
                data = train_data(epoch).skip(position.step)
        if position.stopped_at:
            return


def finish(spec: JobSpec, run_dir: Path, par, net, data: Data, cbs: Callbacks, say,
           board=None, best=None) -> None:
    """The closing line, the weights digests, and the main rank's pictures: drawn from the best
    epoch's evaluation when `best` (src/training/evaluate.BestEvaluation) kept it for the whole
    validation split, else by predicting the split again with best.ckpt."""
    from launcher.core.rundir.progress import Stage
    cbs.report.recorder.stage(Stage.FINISHING)
    say(cbs.report.closing_line())
    # Every rank prints it: equal digests mean the ranks ended with identical weights.
    print(f"rank {par.rank}: final weights sha256 {weights_digest(net.trainable_params())}, "
          f"batchnorm statistics sha256 {weights_digest(net.untrainable_params())}", flush=True)
    if par.is_main:  # predictions/curves/confusion PNGs; failures there only warn
        from src.data import dataset
        from src.pictures.run import make_run_pictures
        full_val = data.val_ds if data.val_indices is None else \
            dataset.create_dataset(spec.val_dir, training=False, **data.val_args())
        kept = None
        if best is not None and data.val_indices is None:
            kept = best.of_whole_split(cbs.report.best_epoch, dataset.count_images(spec.val_dir))
        pictures = make_run_pictures(spec, run_dir, net, full_val, data.classes,
                                     cbs.report.recorder.batch, evaluation=kept)
        if board is not None:
            board.pictures(pictures)
    cbs.report.recorder.stage(Stage.DONE)


def train(spec: JobSpec, run_dir: Path, position_out: list | None = None) -> int:
    """Train the job in `run_dir` from where last.ckpt left it; 0, or EXIT_REQUEUE after a
    requested stop. `position_out` receives the callbacks' Position (for the failure report)."""
    import mindspore as ms

    from src.training import compile_cache, parallel, seeds
    from src.training.progress import Recorder

    configure_context(spec)
    amp_level, sink_mode = effective_settings(spec)
    par = parallel.init_parallel(run_dir=run_dir, device=spec.device)
    recorder = Recorder(run_dir if (run_dir / LOGS).is_dir() else None, par.rank,
                        attempt_number(os.environ), head_lr_mult=spec.head_lr_mult)
    say = (lambda msg: print(msg, flush=True)) if par.is_main else (lambda msg: None)
    # identical initial weights (incl. the new head) on every rank
    ms.set_seed(seeds.network_seed(spec.seed))

    data = prepare_data(spec, par)
    from src.data.dataset import count_images
    counts = {"train_images": data.n_train, "steps": data.steps, "val_images":  # graph shapes
              len(data.val_indices) if data.val_indices is not None else
              count_images(spec.val_dir)}
    with compile_cache.session(spec, run_dir, par.rank, par.world, counts, say) as graphs:
        return train_prepared(spec, run_dir, par, data, say, recorder, amp_level, sink_mode,
                              position_out, graphs)


def train_prepared(spec: JobSpec, run_dir: Path, par, data: Data, say, recorder, amp_level: str,
                   sink_mode: bool, position_out: list | None, graphs=None) -> int:
    """train() once the data is counted: everything that compiles graphs. `graphs`: the
    compile cache's entry in use (None when it is off)."""
    from mindspore.train import Model

    from src.training import collective, transfer
    from src.training.evaluate import BestEvaluation, evaluate

    net, cache = prepare_network(spec, run_dir, par, data, say, recorder)
    steps, train_data = data.steps, data.train_data
    if cache:  # the trainable rest trains on the frozen prefix's cached activations
        steps, sink_mode, train_data = cache.steps_per_epoch, False, cache.train_dataset
    from src.testing import faults
    train_data = faults.in_data(os.environ, par.rank, train_data)  # test-only: a data fault
    opt, rates, base_lr, step_rates = build_optimizer(spec, par, net, steps)
    recorder.images_per_step = spec.batch_size * par.world
    recorder.lr_at = lambda step: rates[min(step, len(rates) - 1)]
    loss = transfer.loss_fn(spec.label_smoothing)
    model = Model(cache.network if cache else net, loss, opt, amp_level=amp_level)

    best = BestEvaluation()  # the pictures draw best.ckpt's predictions from it

    def validation_accuracy() -> float:
        result = cache.evaluate(recorder.batch) if cache else \
            evaluate(net, data.val_ds, recorder.batch)
        if graphs is not None:
            graphs.keep_compiled("evaluation")  # the first time: the evaluation graph too
        best.latest = result
        correct, total = collective.allreduce_sum([result.correct, result.total],
                                                  par.world if data.sharded_eval else 1)
        return float(correct) / float(total) if total else 0.0

    resume = resume_agreed(run_dir, net, opt, par)
    announce(spec, run_dir, par, data, resume, steps, base_lr, say)
    cbs = make_callbacks(spec, run_dir, par, data, net, opt, rates, steps, validation_accuracy,
                         resume, recorder, best)
    if graphs is not None:  # the train graph has compiled and run: kept for a restart
        from src.training.callbacks import AfterFirstStep
        cbs.cache.append(AfterFirstStep(lambda: graphs.keep_compiled("step")))
    if step_rates is not None:
        cbs.schedule.append(step_rates)
    if position_out is not None:
        position_out.append(cbs.position)
    board = start_tensorboard(spec, run_dir, resume, steps, recorder, cbs.report) \
        if par.is_main and spec.tensorboard else None
    finished = False
    try:
        fit(spec, model, train_data, cbs, resume, sink_mode)
        if stopped_on_request(spec, cbs, say):
            return EXIT_REQUEUE
        finish(spec, run_dir, par, net, data, cbs, say, board, best)
        finished = True
    finally:
        if board is not None:
            try:
                board.close(finished=finished)
            except OSError as e:  # the run's outcome stands
                print(f"warning: TensorBoard event files: {e}", file=sys.stderr, flush=True)
    return 0


def start_tensorboard(spec: JobSpec, run_dir: Path, resume: ResumePoint, steps: int, recorder,
                      report, budget=None):
    """Rank 0's TensorBoard writer (src/training/tensorboard_events.py), listening to the
    progress record (per step) and to the metrics rows (per epoch; curves at a new best when
    `budget` allows: by default, when that costs under 1% of the run). Its purge marker is the
    first step this attempt trains. None (and a warning) when it cannot write."""
    from src.training.tensorboard_events import (
        PictureBudget,
        TensorBoardEvents,
        compared_hparams,
        sweep_keys_of,
    )
    try:
        board = TensorBoardEvents(run_dir, attempt=attempt_number(os.environ),
                                  first_step=resume.epoch * steps + resume.step + 1,
                                  log_every_steps=spec.log_every_steps)
        board.job((run_dir / JOB_JSON).read_text(encoding="utf-8"))
        board.session_start(compared_hparams(spec.to_dict(), sweep_keys_of(run_dir)))
    except Exception as e:  # noqa: BLE001 - a viewer must never stop training
        print(f"warning: no TensorBoard event files for this run: {e!r}", file=sys.stderr,
              flush=True)
        return None
    recorder.subscribe(board.listen)
    report.row_listeners.append(board.epoch_row)
    budget = budget or PictureBudget()

    def curves_at_new_best(row: dict) -> None:
        if row["val_acc"] is None or row["best_epoch"] != row["epoch"] or not budget.allows():
            return
        import time

        from src.pictures.run import write_curves
        t0 = time.monotonic()
        board.pictures([write_curves(spec, run_dir)], row["epoch"] * row["steps"])
        budget.charge(time.monotonic() - t0)

    report.row_listeners.append(curves_at_new_best)
    return board


def attempt_number(env) -> int:
    """This launch's attempt (PACKRUN_ATTEMPT, 1 when unset or not a number)."""
    text = env.get(ATTEMPT_ENV, "1")
    return int(text) if text.isdigit() else 1


def announce(spec: JobSpec, run_dir: Path, par, data: Data, resume: ResumePoint, steps: int,
             base_lr: float, say) -> None:
    if resume.step:
        say(f"resuming from {run_dir / LAST_CKPT}: epoch {resume.epoch} of {spec.epochs} done "
            f"and {resume.step} of {steps} steps of epoch {resume.epoch + 1}")
    elif resume.epoch:
        say(f"resuming from {run_dir / LAST_CKPT}: epoch {resume.epoch} of {spec.epochs} done")
    say(f"{spec.arch} {spec.mode}: {len(data.classes)} classes, {counted(steps, 'step')}/epoch x "
        f"{counted(spec.epochs, 'epoch')}, batch {spec.batch_size} x {par.world} worker(s), "
        f"lr {base_lr:g}"
        f"{f' (head x {spec.head_lr_mult:g})' if spec.head_lr_mult != 1 else ''}"
        f"{f', label smoothing {spec.label_smoothing:g}' if spec.label_smoothing else ''}, "
        f"device {spec.device}")


def stopped_on_request(spec: JobSpec, cbs: Callbacks, say) -> bool:
    """After fit: whether a stop request ended training early; then last.ckpt holds the step
    (written here after a stop mid-epoch; at an epoch's last step the epoch end wrote it)."""
    position = cbs.position
    if not position.stopped_at or position.stopped_at == (spec.epochs, position.steps_per_epoch):
        return False  # no request, or one at the very last step: the run is complete
    epoch, step = position.stopped_at
    if position.stopped_mid_epoch:
        cbs.checkpoint.save_at_stop()  # every rank (it gathers their BatchNorm statistics)
        held = f"epoch {epoch - 1} and {step} step(s) of epoch {epoch}"
    else:
        held = f"epoch {epoch}"
    say(f"stopped on request ({PREEMPT_FLAG}) at epoch {epoch} step {step}; {LAST_CKPT} holds "
        f"{held}: start the run again to resume")
    return True


def run(run_dir: Path, rank: int | None = None) -> int:
    """train(), and on an exception logs/worker_<rank>.error.json
    (launcher/core/rundir/failure.py) before the worker goes: exit 2 for bad input (one line),
    the traceback and exit 1 otherwise."""
    position: list = []
    try:
        return train(spec_from_json(run_dir), run_dir, position)
    except Exception as e:
        from src.data.images import BadImage, bad_image_in
        bad = bad_image_in(e)  # a BadImage the data pipeline re-raised inside its own report
        if bad is not None:
            e = BadImage(bad)
        if isinstance(e, UserError):
            print(f"packrun: error: {e}", file=sys.stderr, flush=True)
            write_worker_error(run_dir, rank, e, position[0] if position else None)
            return EXIT_USER_ERROR
        write_worker_error(run_dir, rank, e, position[0] if position else None)
        raise


def answer_stack_requests(run_dir: Path, rank: int) -> None:
    """The stall watchdog's stack request (launcher/supervise/watchdog.py): on STACK_SIGNAL the
    interpreter's C-level handler appends every thread's Python stack to
    logs/worker_<rank>.stack, also while Python code is blocked (a data loader, a collective)."""
    import faulthandler
    import signal
    out = open(run_dir / worker_stack(rank), "a", encoding="utf-8")  # open for the process's life
    faulthandler.register(signal.Signals[STACK_SIGNAL_NAME], file=out, all_threads=True)


def main(argv: list[str]) -> int:
    """Run, and leave logs/worker_<rank>.exit behind with the exit status, so that the
    supervisor tells a worker that failed from one that finished (and a killed one, which
    leaves none, from both)."""
    if len(argv) != 2:
        print("usage: python src/train.py RUN_DIR", file=sys.stderr)
        return EXIT_USER_ERROR
    run_dir = Path(argv[1]).resolve()
    rank = ranks.rank_from_env(os.environ)
    if rank is not None and (run_dir / LOGS).is_dir():
        write_atomic(run_dir / worker_pid(rank), f"{os.getpid()}\n")
        answer_stack_requests(run_dir, rank)
    code = 1
    try:
        code = run(run_dir, rank)
    except KeyboardInterrupt:  # Ctrl-C reaching the worker itself: 130 in its exit file too
        print("packrun: worker interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    finally:
        if rank is not None and (run_dir / LOGS).is_dir():
            write_atomic(run_dir / worker_exit(rank), f"{code}\n")
    if code in (0, EXIT_REQUEUE) and rank is not None and ranks.joins_a_collective(os.environ):
        # Leave together: msrun kills the other workers as soon as one exits non-zero (75), and
        # its scheduler then waits ~30 s for them; after this barrier all have written their
        # exit status and exit within moments of each other.
        leave_together(rank, ranks.world_from_env(os.environ))
    return code


def leave_together(rank: int, world: int) -> None:
    """The closing barrier of a collective's ranks, after each has written its exit status.

    Only a convenience for leaving at once: the run has ended and every result is saved. So a
    failure here keeps the exit status. MindSpore's CPU AllReduce can fail on the rank that
    sends last when its peer, having received everything, has already left (seen on the
    two-host test cluster: "Broadcast wait sending ... failed" 30 s later on rank 0, while rank 1
    had unregistered); that must not turn a finished run into a failed one.
    """
    from src.training.collective import allreduce_sum
    try:
        allreduce_sum([0], world)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"packrun: rank {rank}: the closing barrier failed after the run ended ({first}); "
              "its exit status stands", file=sys.stderr, flush=True)


if __name__ == "__main__":
    _code = main(sys.argv)
    if not ranks.joins_a_collective(os.environ):
        leave(_code)  # without the interpreter's teardown (0.5-1 s): launcher/core/quick_exit.py
    sys.exit(_code)
