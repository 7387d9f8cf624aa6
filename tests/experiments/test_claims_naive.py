"""naive-normalization: the stop-gradient layer's maths, and short runs of the experiment."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnlab.experiments.naive_normalization.config import NaiveConfig
from bnlab.experiments.naive_normalization.normalize import BatchNormalize
from bnlab.experiments.naive_normalization.report import verdicts
from bnlab.layers import Dense, Sequential, Sigmoid
from bnlab.losses import SoftmaxCrossEntropy

# the helpers shared by the test_claims_* files (pytest runs with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location(
    "claims_helpers", Path(__file__).with_name("claims_helpers.py")
)
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def _net(full: bool, naive: bool) -> Sequential:
    layers = [
        Dense(6, 5, seed=1),
        BatchNormalize(5, full=full, stop_gradient=naive, eps=1e-3),
        Sigmoid(),
        Dense(5, 3, seed=2),
    ]
    for layer in layers:
        layer.astype(np.float64)
    model = Sequential(layers)
    rng = np.random.default_rng(0)
    model.params["0.b"][...] = rng.normal(size=5)  # a bias that is not zero to start with
    return model


def _loss(model: Sequential, x: np.ndarray, y: np.ndarray) -> float:
    return SoftmaxCrossEntropy()(model.forward(x), y)[0]


@pytest.mark.parametrize("full", [False, True])
def test_the_naive_bias_update_leaves_the_loss_unchanged(full: bool) -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 6)), rng.integers(0, 3, size=16)
    model = _net(full, naive=True)
    loss, dlogits = SoftmaxCrossEntropy()(model.forward(x), y)
    model.backward(dlogits)
    db = model.grads["0.b"].copy()
    # naive: db = sum_n dL/dx_n with the statistics held constant, which is not zero
    assert np.linalg.norm(db) > 1e-3
    for _ in range(5):
        model.params["0.b"] -= 10.0 * db
        assert _loss(model, x, y) == pytest.approx(loss, rel=0, abs=1e-12)


@pytest.mark.parametrize("full", [False, True])
def test_proper_gradient_matches_finite_differences_and_the_bias_gets_none(full: bool) -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 6)), rng.integers(0, 3, size=12)
    model = _net(full, naive=False)
    _, dlogits = SoftmaxCrossEntropy()(model.forward(x), y)
    model.backward(dlogits)
    assert np.abs(model.grads["0.b"]).max() < 1e-14  # the output does not depend on b
    W, h = model.params["0.W"], 1e-6
    for idx in [(0, 0), (2, 3), (5, 4)]:
        W[idx] += h
        up = _loss(model, x, y)
        W[idx] -= 2 * h
        down = _loss(model, x, y)
        W[idx] += h
        assert model.grads["0.W"][idx] == pytest.approx((up - down) / (2 * h), abs=1e-8)


def test_naive_full_backward_is_gamma_over_sigma_times_dy() -> None:
    rng = np.random.default_rng(5)
    x, dy = rng.normal(2.0, 3.0, size=(10, 4)), rng.normal(size=(10, 4))
    layer = BatchNormalize(4, full=True, stop_gradient=True, eps=1e-3, dtype=np.float64)
    layer.params["gamma"][...] = [0.5, 1.0, 2.0, -1.0]
    y = layer.forward(x)
    expect_y = layer.params["gamma"] * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    np.testing.assert_allclose(y, expect_y, atol=1e-12)
    dx = layer.backward(dy)
    np.testing.assert_allclose(
        dx, dy * layer.params["gamma"] / np.sqrt(x.var(0) + 1e-3), atol=1e-12
    )
    np.testing.assert_allclose(layer.grads["beta"], dy.sum(0), atol=1e-12)


def test_config_errors_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--eval-examples"):
        NaiveConfig.from_dict({"eval_examples": 20_000})
    with pytest.raises(ValueError, match="--lr"):
        NaiveConfig.from_dict({"lr": -1.0})
    assert NaiveConfig.from_dict({"full": True}).steps == 50_000


def test_short_run(tmp_path: Path) -> None:
    argv = ["--steps", "40", "--hidden", "8", "--eval-examples", "100", "--eval-every", "5"]
    m = helpers.run_and_render("naive-normalization", argv, tmp_path / "run", ["fig_bias_loss.png"])
    assert len(m["runs"]) == 8
    vs = verdicts(m)
    assert len(vs) == 4
    bias_only = [v for v in vs if v["train"] == "bias"]
    # biases only: the naive loss stays where it is, the proper bias where it started
    assert all(v["naive_loss"] == pytest.approx(v["naive_loss0"], abs=1e-5) for v in bias_only)
    assert all(v["proper_bias"] < 1e-5 < v["naive_bias"] for v in bias_only)
    assert "claim" in (tmp_path / "run" / "report.md").read_text()


def test_interrupted_run_renders(tmp_path: Path) -> None:
    argv = ["naive-normalization", "--steps", "100000", "--hidden", "8", "--eval-examples", "100"]
    argv += ["--eval-every", "10", "--no-progress"]

    def started(m: dict[str, Any]) -> bool:
        return bool(m["runs"]) and len(m["runs"][0]["history"]["step"]) >= 2

    m = helpers.interrupt_and_check(argv, tmp_path / "run", started)
    assert len(m["runs"]) == 1 and 2 <= len(m["runs"][0]["history"]["step"]) < 10_000
