"""The declared layer protocol (bnlab.layers.base): what train and deploy call, with defaults.

A user-defined layer that subclasses Layer and declares ``backward(dy, *,
need_input_grad=True)`` works in Sequential, Trainer, fold_batch_norm and
recompute_population_stats; nothing is probed with inspect/getattr at use time.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from bnlab.deploy import fold_batch_norm, recompute_population_stats
from bnlab.layers import LAYER_REGISTRY, BatchNorm, Dense, Layer, Sequential, Sigmoid
from bnlab.layers._common import InputShapeError
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import SGD
from bnlab.train import Trainer


class Scale(Layer):
    """y = s * x with one trainable scalar s: dL/ds = sum(dy * x), dx = s * dy."""

    registry_name = "_test_Scale"  # "_": a private test class other tests' registry scans skip

    def __init__(self, s: float = 2.0, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.params = {"s": np.array([s], np.float32)}
        self.grads = {"s": np.zeros(1, np.float32)}
        self.calls: list[bool] = []
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = np.asarray(x)
        return self.params["s"][0] * self._x

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        assert self._x is not None
        self.calls.append(need_input_grad)
        self.grads["s"][...] = np.sum(dy * self._x)
        return self.params["s"][0] * dy if need_input_grad else None

    def get_config(self) -> dict[str, object]:
        return {"s": float(self.params["s"][0]), "name": self.name}


class Halve(Layer):
    """Keeps the first half of the features; declares its output shape."""

    registry_name = "_test_Halve"

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[:, : x.shape[1] // 2]

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        return np.concatenate([dy, np.zeros_like(dy)], axis=1)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[1] % 2:
            raise InputShapeError("Halve", "(N, an even D)", input_shape)
        return (input_shape[0], input_shape[1] // 2)

    def describe(self) -> str:
        return "Halve(D -> D/2)"


@pytest.fixture(autouse=True)
def _registry_restored():
    """The classes the tests define register themselves in LAYER_REGISTRY: take them out."""
    saved = dict(LAYER_REGISTRY)
    yield
    LAYER_REGISTRY.clear()
    LAYER_REGISTRY.update(saved)


def test_every_registered_layer_declares_need_input_grad() -> None:
    old = [
        name
        for name, cls in LAYER_REGISTRY.items()
        if "need_input_grad" not in inspect.signature(cls.backward).parameters
    ]
    assert old == []


def test_the_defaults() -> None:
    layer = Scale()
    assert layer.output_shape((7, 3)) == (7, 3)  # shape-preserving unless declared
    assert layer.describe() == "Scale"
    assert layer.sublayers() == [] and list(layer.modules()) == [layer]
    model = Sequential([layer, Sequential([Sigmoid()])])
    assert [type(m).__name__ for m in model.modules()] == [
        "Sequential",
        "Scale",
        "Sequential",
        "Sigmoid",
    ]
    with pytest.raises(NotImplementedError):
        Layer().backward(np.zeros(1))


def test_a_user_layer_in_trainer_is_asked_for_no_input_gradient() -> None:
    """One SGD step through Scale as the model's first layer, checked by hand."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    scale, dense = Scale(2.0), Dense(4, 3, seed=0)
    model = Sequential([scale, dense])
    w = dense.params["W"].copy()
    logits = 2.0 * x @ w + dense.params["b"]
    _, dlogits = SoftmaxCrossEntropy()(logits, y)
    want_ds = np.sum((dlogits @ w.T) * x)
    Trainer(model, SoftmaxCrossEntropy(), SGD.from_model(model, lr=0.1), [(x, y)]).fit(1)
    assert scale.calls == [False]  # the first layer with parameters: no dL/dx needed
    np.testing.assert_allclose(scale.params["s"][0], 2.0 - 0.1 * want_ds, rtol=1e-5)
    model.forward(x)
    assert model.backward(np.ones((16, 3), np.float32)).shape == (16, 4)
    assert scale.calls == [False, True]


def test_declared_output_shape_and_describe_drive_sequential() -> None:
    model = Sequential([Dense(4, 6, seed=0), Halve(), Dense(3, 2, seed=1)])
    assert model.output_shape((5, 4)) == (5, 2)
    assert "Halve(D -> D/2)" in model.summary((4,))
    with pytest.raises(
        ValueError,
        match=r"Dense\(3->2\) at index 2 .* Halve\(D -> D/2\) at index 1 produced \(N, 4\)",
    ):
        Sequential([Dense(4, 8, seed=0), Halve(), Dense(3, 2, seed=1)]).output_shape((5, 4))
    with pytest.raises(ValueError, match=r"Halve\(D -> D/2\) at index 1 expected input"):
        Sequential([Dense(4, 5, seed=0), Halve()]).output_shape((5, 4))


def test_a_backward_returning_none_for_dx_is_named() -> None:
    class Lazy(Scale):
        def backward(self, dy, *, need_input_grad=True):  # type: ignore[no-untyped-def]
            super().backward(dy, need_input_grad=need_input_grad)
            return None

    model = Sequential([Dense(4, 4, seed=0), Lazy(name="lazy")])
    model.forward(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match=r"Lazy at index 1 returned None"):
        model.backward(np.ones((3, 4), np.float32))


def test_fold_and_population_pass_a_user_layer_through() -> None:
    rng = np.random.default_rng(1)
    bn = BatchNorm(3)
    model = Sequential([Dense(4, 3, seed=0), bn, Scale(1.5)]).astype(np.float64)
    xs = [rng.normal(size=(10, 4)) for _ in range(3)]
    summary = recompute_population_stats(model, xs)
    assert summary.layers == ["1"] and bn.num_batches_tracked == 0
    model.eval()
    folded = fold_batch_norm(model)
    assert [type(layer).__name__ for layer in folded.layers] == ["Dense", "Scale"]
    np.testing.assert_allclose(folded.forward(xs[0]), model.forward(xs[0]), rtol=1e-10)
    with pytest.raises(TypeError, match="fold_batch_norm: unsupported layer"):
        fold_batch_norm(object())  # type: ignore[arg-type]
