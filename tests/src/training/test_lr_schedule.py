"""A learning-rate schedule set from the host before each step (src/training/lr_schedule.py
StepRates: CPU in GRAPH_MODE) trains exactly as the same schedule in the graph (MindSpore's
per-step rate tensor): the same rates, bit for bit, with and without a head group, from a fresh
start and from a restored step counter."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from src.training.lr_schedule import learning_rates


@pytest.mark.unit
def test_the_schedules_rates():
    assert learning_rates(0.1, "constant", 2, 3) == [0.1] * 6
    warm = learning_rates(0.1, "cosine", 3, 2, warmup_epochs=1)
    assert warm[:2] == [0.05, 0.1]  # linear warm-up over the first epoch's 2 steps
    assert warm[2] == pytest.approx(0.1) and warm[-1] == pytest.approx(0.1 * 0.5 * (1 + np.cos(
        np.pi * 3 / 4)))
    assert all(a > b for a, b in itertools.pairwise(warm[2:]))


def _train(rates, head_lr_mult, host, steps, start_step=0):
    """A small two-layer network's weights after `steps` steps of Momentum with `rates`, in the
    graph (a rate tensor) or set from the host (StepRates); the optimizer's step counter starts
    at `start_step` (a resumed run's)."""
    import mindspore as ms
    from mindspore import nn

    from src.training.lr_schedule import StepRates
    from src.training.transfer import group_multipliers, loss_fn

    ms.set_seed(5)
    net = nn.SequentialCell([nn.Dense(6, 5), nn.ReLU(), nn.Dense(5, 3)])
    body = list(net[0].trainable_params())
    head = list(net[2].trainable_params())
    lr = rates[0] if host else ms.Tensor(rates, ms.float32)
    groups = [{"params": body, "lr": lr}, {"params": head, "lr": lr * head_lr_mult}] \
        if head_lr_mult != 1.0 else body + head
    opt = nn.Momentum(groups, learning_rate=lr, momentum=0.8)
    opt.global_step.set_data(ms.Tensor(np.array([start_step], np.int32)))
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn(0.0)), opt)
    setter = StepRates(opt, rates, group_multipliers(groups, head_lr_mult)) if host else None
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = ms.Tensor(rng.standard_normal((4, 6)).astype(np.float32))
        y = ms.Tensor(rng.integers(0, 3, 4).astype(np.int32))
        if setter is not None:
            setter.on_train_step_begin(None)
        step(x, y)
    return [p.asnumpy() for p in net.get_parameters()]


@pytest.mark.e2e
@pytest.mark.parametrize("head_lr_mult", [1.0, 2.5])
def test_rates_set_from_the_host_train_as_the_in_graph_schedule(head_lr_mult):
    # GRAPH_MODE, where the worker sets rates from the host (launcher/core/compile_cache.py
    # schedule_from_host; the mode is set back after the test: tests/conftest.py)
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    rates = learning_rates(0.3, "cosine", 3, 2, warmup_epochs=1)
    for start in (0, 2):
        in_graph = _train(rates, head_lr_mult, host=False, steps=4, start_step=start)
        host = _train(rates, head_lr_mult, host=True, steps=4, start_step=start)
        for a, b in zip(in_graph, host):
            assert a.tobytes() == b.tobytes(), (head_lr_mult, start)
    # and the schedule matters: a constant rate ends elsewhere
    flat = _train([0.3] * 6, head_lr_mult, host=True, steps=4)
    assert any(a.tobytes() != b.tobytes() for a, b in zip(flat, host))


@pytest.mark.unit
def test_the_rate_at_each_step_and_past_the_end():
    import mindspore as ms
    from mindspore import nn

    from src.training.lr_schedule import StepRates, learning_rate_parameters
    net = nn.Dense(2, 2)
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.5, momentum=0.9)
    setter = StepRates(opt, [0.5, 0.25, 0.125])
    assert [p.name for p in learning_rate_parameters(opt)] == ["learning_rate"]
    for counter, rate in ((0, 0.5), (2, 0.125), (7, 0.125)):
        opt.global_step.set_data(ms.Tensor(np.array([counter], np.int32)))
        setter.on_train_step_begin(None)
        assert float(opt.learning_rate.asnumpy()) == rate


@pytest.mark.unit
@pytest.mark.parametrize("saved, resumed", [("in_graph", "host"), ("host", "in_graph")])
def test_a_last_ckpt_with_the_schedule_in_its_other_form_resumes(tmp_path, saved, resumed):
    """last.ckpt written with the schedule in the graph (a rate tensor: an older packrun, or
    Ascend) resumes a run that sets it from the host, and the other way round: the job's
    schedule gives every step's rate, the rest (weights, moments, step counter) is restored."""
    import mindspore as ms
    from mindspore import nn

    from src.train import resumable_parameters, resume_from
    rates = learning_rates(0.1, "cosine", 2, 3)

    def build(form):
        ms.set_seed(1)
        net = nn.Dense(3, 2)
        lr = ms.Tensor(rates, ms.float32) if form == "in_graph" else rates[0]
        return net, nn.Momentum(net.trainable_params(), learning_rate=lr, momentum=0.9)

    net, opt = build(saved)
    for p in opt.moments:
        p.set_data(ms.Tensor(np.full(p.shape, 0.5, np.float32)))
    opt.global_step.set_data(ms.Tensor(np.array([3], np.int32)))
    entries = resumable_parameters(net, opt) + [
        {"name": "epoch", "data": ms.Tensor(1, ms.int32)}]
    ms.save_checkpoint(entries, str(tmp_path / "last.ckpt"))
    net2, opt2 = build(resumed)
    lr_before = [p.asnumpy().copy() for p in opt2.get_parameters() if "learning_rate" in p.name]
    point = resume_from(tmp_path, net2, opt2)
    assert point.epoch == 1
    assert int(opt2.global_step.asnumpy()[0]) == 3
    assert all(float(m.asnumpy().max()) == 0.5 for m in opt2.moments)
    lr_after = [p.asnumpy() for p in opt2.get_parameters() if "learning_rate" in p.name]
    assert [a.shape for a in lr_after] == [b.shape for b in lr_before]
