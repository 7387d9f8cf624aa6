"""covariate-shift: ICS and the landscape measurements against NumPy by hand on a 2-layer net,
the noise layer, and short runs of the experiment."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bnlab.experiments.covariate_shift.config import ShiftConfig
from bnlab.experiments.covariate_shift.measure import gradients, ics, landscape
from bnlab.experiments.covariate_shift.nets import ShiftNoise
from bnlab.layers import Dense, ReLU, Sequential

# the helpers shared by the test_claims_* files (pytest runs with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location(
    "claims_helpers", Path(__file__).with_name("claims_helpers.py")
)
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def _by_hand(W1, b1, W2, b2, x, y):  # type: ignore[no-untyped-def]
    """Loss and gradients of softmax-CE(relu(x W1 + b1) W2 + b2), in NumPy."""
    a = x @ W1 + b1
    h = np.maximum(a, 0)
    z = h @ W2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    dz = p.copy()
    dz[np.arange(n), y] -= 1
    dz /= n
    da = (dz @ W2.T) * (a > 0)
    return loss, {"W1": x.T @ da, "b1": da.sum(0), "W2": h.T @ dz, "b2": dz.sum(0)}


def _net() -> tuple[Sequential, np.ndarray, np.ndarray]:
    layers = [Dense(4, 5, seed=1), ReLU(), Dense(5, 3, seed=2)]
    for layer in layers:
        layer.astype(np.float64)
    model = Sequential(layers)
    model.params["0.b"][...] = np.linspace(-0.2, 0.3, 5)
    rng = np.random.default_rng(0)
    return model, rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)


def test_ics_of_the_second_layer_matches_numpy() -> None:
    model, x, y = _net()
    lr = 0.5
    p = {k: model.params[k].copy() for k in ("0.W", "0.b", "2.W", "2.b")}
    _, g = _by_hand(p["0.W"], p["0.b"], p["2.W"], p["2.b"], x, y)
    # the first layer steps, the second is kept: its gradient before and after
    _, g2 = _by_hand(p["0.W"] - lr * g["W1"], p["0.b"] - lr * g["b1"], p["2.W"], p["2.b"], x, y)
    l2 = np.linalg.norm(g["W2"] - g2["W2"])
    cos = np.sum(g["W2"] * g2["W2"]) / np.linalg.norm(g["W2"]) / np.linalg.norm(g2["W2"])
    assert l2 > 1e-3  # the measure is not trivially zero here
    loss, grads = gradients(model, x, y)
    [(got_l2, got_cos)] = ics(model, x, y, grads, lr, [0, 2])
    assert got_l2 == pytest.approx(l2, rel=1e-10)
    assert got_cos == pytest.approx(cos, rel=1e-10)
    for k, v in p.items():  # the model is as it was
        np.testing.assert_array_equal(model.params[k], v)


def test_landscape_matches_numpy() -> None:
    model, x, y = _net()
    p = [model.params[k].copy() for k in ("0.W", "0.b", "2.W", "2.b")]
    loss0, g = _by_hand(*p, x, y)
    gv = [g["W1"], g["b1"], g["W2"], g["b2"]]
    flat = np.concatenate([v.ravel() for v in gv])
    etas = [0.1, 0.5, 1.0]
    losses, diffs = [], []
    for eta in etas:
        loss, g2 = _by_hand(*(a - eta * b for a, b in zip(p, gv, strict=True)), x, y)
        losses.append(loss)
        flat2 = np.concatenate([g2[k].ravel() for k in ("W1", "b1", "W2", "b2")])
        diffs.append(np.linalg.norm(flat - flat2))
    got_loss0, grads = gradients(model, x, y)
    assert got_loss0 == pytest.approx(loss0, rel=1e-12)
    out = landscape(model, x, y, got_loss0, grads, etas)
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-10)
    np.testing.assert_allclose(out["grad_diffs"], diffs, rtol=1e-10)
    assert out["loss_range"] == pytest.approx(max(losses + [loss0]) - min(losses + [loss0]))
    beta = max(d / (e * np.linalg.norm(flat)) for d, e in zip(diffs, etas, strict=True))
    assert out["beta"] == pytest.approx(beta, rel=1e-10)


def test_noise_layer_draws_per_step_and_backpropagates_its_scale() -> None:
    layer = ShiftNoise(1.0, 2.0, 0.1, seed=0)
    x = np.random.default_rng(1).normal(size=(64, 6))
    y1 = layer.forward(x)
    np.testing.assert_array_equal(layer.forward(x), y1)  # the same draw within a step
    s = layer.backward(np.ones_like(x))
    np.testing.assert_allclose(y1, s * x + (y1 - s * x))  # y = s x + m, dy/dx = s
    assert 1.0 < s.mean() < 2.0 and np.ptp(s.mean(axis=0)) > 0.05  # sigma_j in [1, 2]
    layer.resample()
    assert not np.array_equal(layer.forward(x), y1)  # a new step, new noise
    layer.eval()
    np.testing.assert_allclose(layer.forward(x), 1.5 * x)  # E[s] x


def test_config_needs_cifar_data() -> None:
    with pytest.raises(ValueError, match="--cifar PATH or set BNLAB_CIFAR"):
        ShiftConfig.from_dict({"dataset": "cifar10", "cifar": None})
    with pytest.raises(ValueError, match="--noise-scale"):
        ShiftConfig.from_dict({"noise_scale": 0.5})


def test_short_run(tmp_path: Path) -> None:
    argv = ["--steps", "20", "--hidden", "8", "8", "--eval-examples", "100"]
    figs = ["fig_training.png", "fig_ics.png", "fig_landscape.png"]
    m = helpers.run_and_render("covariate-shift", argv, tmp_path / "run", figs)
    assert [n["name"] for n in m["nets"]] == ["standard", "bn", "noisy-bn"]
    h = m["nets"][1]["history"]
    assert h["step"][-1] == 20 and len(h["ics_l2"][0]) == 2 and len(h["losses"][0]) == 4
    assert "Paper: BN makes the landscape smoother" in (tmp_path / "run" / "report.md").read_text()


def test_interrupted_run_renders(tmp_path: Path) -> None:
    argv = ["covariate-shift", "--steps", "100000", "--hidden", "8", "--eval-examples", "100"]
    argv += ["--measure-every", "10", "--no-progress"]
    m = helpers.interrupt_and_check(argv, tmp_path / "run", lambda m: len(m["nets"]) >= 1)
    assert len(m["nets"]) == 1 and m["nets"][0]["history"]["step"]


def test_cifar10_net_runs_on_a_tiny_cifar_directory(tmp_path: Path) -> None:
    import pickle

    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name, n in [*((f"data_batch_{i}", 8) for i in range(1, 6)), ("test_batch", 8)]:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    argv = ["--dataset", "cifar10", "--cifar", str(d), "--steps", "2", "--batch-size", "4"]
    argv += ["--eval-examples", "8", "--measure-every", "1"]
    figs = ["fig_training.png", "fig_ics.png", "fig_landscape.png"]
    m = helpers.run_and_render("covariate-shift", argv, tmp_path / "run", figs)
    h = m["nets"][2]["history"]
    # 6 weight layers (4 convolutions, 2 dense): ICS of the 5 after the first
    assert h["step"] == [0, 1, 2] and len(h["ics_l2"][0]) == 5
