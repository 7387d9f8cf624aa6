"""Optimizer trajectories against torch.optim; schedules; penalties; state round trip."""

import math

import numpy as np
import pytest
import torch

from bnlab.layers import Layer
from bnlab.optim import (
    L1,
    L2,
    SGD,
    Adam,
    ExponentialDecay,
    RMSprop,
    StepDecay,
    add_penalty_grads,
    penalty_from_config,
    penalty_loss,
)


def _quadratic_grads(params: dict, targets: dict) -> dict:
    """Gradient of sum_k sum (p_k - t_k)^4 / 4 + p_k^2: non-linear so slots matter."""
    return {k: (p - targets[k]) ** 3 + 2 * p for k, p in params.items()}


def _run_ours(opt_cls, steps: int, **kw):
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    targets = {k: rng.normal(size=v.shape) for k, v in params.items()}
    start = {k: v.copy() for k, v in params.items()}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    opt = opt_cls(params, grads, **kw)
    traj = []
    for _ in range(steps):
        for k, g in _quadratic_grads(params, targets).items():
            grads[k][...] = g
        opt.step()
        traj.append({k: v.copy() for k, v in params.items()})
    return start, targets, traj


def _run_torch(make_opt, start, targets, steps, scheduler=None):
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = make_opt(list(ps.values()))
    sched = scheduler(opt) if scheduler else None
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        loss = sum((((p - torch.tensor(targets[k])) ** 4) / 4 + p**2).sum() for k, p in ps.items())
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        traj.append({k: p.detach().numpy().copy() for k, p in ps.items()})
    return traj


def _assert_same(ours, theirs, rtol=1e-12, atol=1e-13):
    for a, b in zip(ours, theirs, strict=True):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol)


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_torch(momentum, nesterov):
    start, targets, ours = _run_ours(SGD, 25, lr=0.05, momentum=momentum, nesterov=nesterov)
    theirs = _run_torch(
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=momentum, nesterov=nesterov),
        start,
        targets,
        25,
    )
    _assert_same(ours, theirs)


def test_adam_matches_torch():
    start, targets, ours = _run_ours(Adam, 30, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6)
    theirs = _run_torch(
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6), start, targets, 30
    )
    _assert_same(ours, theirs)


def test_rmsprop_decay0_matches_torch():
    # Both add eps outside the square root: sqrt(a) + eps. Keras rho == torch alpha.
    start, targets, ours = _run_ours(RMSprop, 30, lr=0.01, rho=0.9, eps=1e-7)
    theirs = _run_torch(
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-7), start, targets, 30
    )
    _assert_same(ours, theirs)


def test_rmsprop_keras_decay_matches_torch_lambda_lr():
    decay = 0.05
    start, targets, ours = _run_ours(RMSprop, 20, lr=0.01, decay=decay)
    theirs = _run_torch(
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-7),
        start,
        targets,
        20,
        scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + decay * t)),
    )
    _assert_same(ours, theirs, rtol=1e-10, atol=1e-12)


def test_rmsprop_keras2_formula_by_hand():
    p = np.array([1.0, -2.0])
    g = np.zeros(2)
    opt = RMSprop({"p": p}, {"p": g}, lr=0.1, rho=0.8, eps=1e-3, decay=0.5)
    a = np.zeros(2)
    expect = p.copy()
    for t, grad in enumerate([np.array([0.5, -1.0]), np.array([2.0, 0.25]), np.array([1, 1.0])]):
        g[...] = grad
        opt.step()
        lr_t = 0.1 / (1 + 0.5 * t)
        a = 0.8 * a + 0.2 * grad**2
        expect -= lr_t * grad / (np.sqrt(a) + 1e-3)
        np.testing.assert_allclose(p, expect, rtol=1e-14)


def test_float32_params_stay_float32_and_match_torch():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5,)).astype(np.float32)
    g = np.zeros_like(w)
    wt = torch.tensor(w.copy(), requires_grad=True)
    opt = Adam({"w": w}, {"w": g}, lr=0.1)
    topt = torch.optim.Adam([wt], lr=0.1)
    for _ in range(10):
        grad = rng.normal(size=5).astype(np.float32)
        g[...] = grad
        wt.grad = torch.tensor(grad)
        opt.step()
        topt.step()
    assert w.dtype == np.float32 and opt.slots["exp_avg"]["w"].dtype == np.float32
    np.testing.assert_allclose(w, wt.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_schedules_values():
    s = StepDecay(0.1, step_size=10, gamma=0.5)
    assert [s(t) for t in (0, 9, 10, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    e = ExponentialDecay(1.0, decay_rate=0.5, decay_steps=4)
    assert [e(t) for t in (0, 2, 4, 8)] == pytest.approx([1, math.sqrt(0.5), 0.5, 0.25])
    es = ExponentialDecay(1.0, decay_rate=0.5, decay_steps=4, staircase=True)
    assert [es(t) for t in (3, 4, 7, 8)] == pytest.approx([1, 0.5, 0.5, 0.25])
    with pytest.raises(ValueError, match="step_size"):
        StepDecay(0.1, step_size=0)


def test_schedule_drives_the_learning_rate():
    p, g = np.zeros(1), np.ones(1)
    opt = SGD({"p": p}, {"p": g}, lr=StepDecay(1.0, step_size=2, gamma=0.1))
    for _ in range(4):
        opt.step()
    assert p[0] == pytest.approx(-(1 + 1 + 0.1 + 0.1))


class _Layer(Layer):
    def __init__(self, w, regs):
        super().__init__()
        self.params = {"W": w}
        self.grads = {"W": np.zeros_like(w)}
        self.regularizers = regs


class _Model(Layer):
    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def sublayers(self):
        return self.layers


def test_penalties_counted_in_loss_and_grad():
    w1 = np.array([[1.0, -2.0], [0.0, 3.0]])
    w2 = np.array([0.5, -0.5])
    model = _Model([_Layer(w1, {"W": L2(0.1)}), _Layer(w2, {"W": L1(0.2)}), _Layer(w2, {})])
    assert penalty_loss(model) == pytest.approx(0.1 * 14 + 0.2 * 1.0)
    add_penalty_grads(model)
    np.testing.assert_allclose(model.layers[0].grads["W"], 0.2 * w1)
    np.testing.assert_allclose(model.layers[1].grads["W"], 0.2 * np.sign(w2))
    np.testing.assert_array_equal(model.layers[2].grads["W"], 0)


def test_penalty_gradients_by_finite_differences(rng):
    w = rng.normal(size=(3, 2))
    for pen in (L1(0.3), L2(0.7)):
        h = 1e-6
        fd = np.zeros_like(w)
        for i in np.ndindex(w.shape):
            wp, wm = w.copy(), w.copy()
            wp[i] += h
            wm[i] -= h
            fd[i] = (pen.loss(wp) - pen.loss(wm)) / (2 * h)
        np.testing.assert_allclose(pen.grad(w), fd, atol=1e-7)


def test_l2_equals_torch_weight_decay_halved():
    w = np.random.default_rng(2).normal(size=(3, 4))
    layer = _Layer(w, {"W": L2(0.05)})
    opt = SGD(layer.params, layer.grads, lr=0.1)
    wt = torch.tensor(w.copy(), requires_grad=True)
    topt = torch.optim.SGD([wt], lr=0.1, weight_decay=0.1)
    for _ in range(5):
        layer.grads["W"][...] = np.cos(w)
        add_penalty_grads(layer)
        opt.step()
        wt.grad = torch.cos(wt.detach())
        topt.step()
    np.testing.assert_allclose(w, wt.detach().numpy(), rtol=1e-12)


def test_penalty_config_round_trip():
    for pen in (L1(0.01), L2(1e-4)):
        assert penalty_from_config(pen.get_config()) == pen
    assert penalty_from_config(None) is None
    with pytest.raises(ValueError, match="L1"):
        penalty_from_config({"type": "L3", "l": 1})


@pytest.mark.parametrize(
    ("cls", "kw"),
    [
        (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        (RMSprop, {"lr": 0.01, "decay": 0.1}),
        (Adam, {"lr": StepDecay(0.01, 3, 0.5)}),
    ],
)
def test_state_dict_round_trip_resumes_bit_for_bit(cls, kw):
    def grads_at(p):
        return {k: np.sin(3 * v) + v for k, v in p.items()}

    rng = np.random.default_rng(3)
    p1 = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    p2 = {k: v.copy() for k, v in p1.items()}
    g1 = {k: np.zeros_like(v) for k, v in p1.items()}
    g2 = {k: np.zeros_like(v) for k, v in p2.items()}
    straight = cls(p1, g1, **kw)
    first = cls(p2, g2, **kw)
    for i in range(10):
        for k, v in grads_at(p1).items():
            g1[k][...] = v
        straight.step()
        if i < 5:
            for k, v in grads_at(p2).items():
                g2[k][...] = v
            first.step()
    state = first.state_dict()
    other_kw = dict(kw, lr=123.0)  # hyperparameters are restored from the state too
    resumed = cls(p2, g2, **other_kw)
    resumed.load_state_dict(state)
    assert resumed.iterations == 5 and resumed.get_config() == first.get_config()
    for _ in range(5):
        for k, v in grads_at(p2).items():
            g2[k][...] = v
        resumed.step()
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_load_state_dict_checks_before_changing_anything():
    p = {"w": np.zeros(3)}
    opt = Adam(p, {"w": np.zeros(3)})
    bad = opt.state_dict()
    bad["slots"]["exp_avg"]["w"] = np.ones(4)
    with pytest.raises(ValueError, match=r"'w' has shape \(4,\)"):
        opt.load_state_dict(bad)
    assert opt.iterations == 0 and not opt.slots["exp_avg"]["w"].any()
    with pytest.raises(ValueError, match="'SGD'"):
        opt.load_state_dict(SGD(p, {"w": np.zeros(3)}, lr=0.1).state_dict())


def test_from_model_reads_current_grads():
    class M:
        def __init__(self):
            self.params = {"w": np.zeros(2)}
            self._g = {"w": np.ones(2)}

        @property
        def grads(self):
            return self._g

    m = M()
    opt = SGD.from_model(m, lr=0.5)
    m._g = {"w": np.full(2, 2.0)}  # a model that rebinds its grads dict
    opt.step()
    np.testing.assert_array_equal(m.params["w"], [-1.0, -1.0])


def test_constructor_errors():
    with pytest.raises(KeyError, match="only in params"):
        SGD({"a": np.zeros(1)}, {"b": np.zeros(1)}, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        SGD({"a": np.zeros(1)}, {"a": np.zeros(1)}, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD({"a": np.zeros(1)}, {"a": np.zeros(1)}, lr=0.1, nesterov=True)
    opt = SGD({"a": np.zeros(2)}, {"a": np.zeros(3)}, lr=0.1)
    with pytest.raises(ValueError, match=r"gradient 'a' has shape \(3,\)"):
        opt.step()
