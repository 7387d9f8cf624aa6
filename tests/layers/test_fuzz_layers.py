"""Fuzz every public layer and BN kernel with random dtypes, shapes and special values.

The contract (issue 15): a documented error (TypeError, ValueError or FloatingPointError with a
message that says what is wrong) and nothing changed -- parameters, gradients, buffers and
the caller's arrays byte-for-byte equal -- or a finite, correct result. "Finite" is asked of
finite inputs of moderate size (|x| <= 1e4); "correct" is checked against float64 formulas
for the batch-norm family (training BN, and every variant's eval mode).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bnlab import kernels as K
from bnlab.comm import SelfComm
from bnlab.layers import (
    BatchNorm,
    BatchRenorm,
    ChannelAffine,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePool2D,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    SyncBatchNorm,
    SyncBatchRenorm,
    Tanh,
)

DOCUMENTED = (TypeError, ValueError, FloatingPointError)
FLOATS = [np.float16, np.float32, np.float32, np.float64, np.float64, np.float64]
DTYPES = [*FLOATS, *FLOATS, np.int32, np.bool_, np.complex128, object]
SPECIALS = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0]
TOL = {np.dtype(np.float16): 2e-2, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}

BN_FAMILY = {
    "BatchNorm": lambda: BatchNorm(3, momentum=0.3),
    "BatchNorm-ghost": lambda: BatchNorm(3, virtual_batch_size=2),
    "BatchNorm-cumulative": lambda: BatchNorm(3, momentum=None, affine=False),
    "BatchNorm-untracked": lambda: BatchNorm(3, track_running_stats=False),
    "BatchRenorm": lambda: BatchRenorm(3, warmup_steps=0, rmax_steps=0, dmax_steps=0),
    "BatchRenorm-ghost": lambda: BatchRenorm(3, virtual_batch_size=2),
    "SyncBatchNorm": lambda: SyncBatchNorm(3, comm=SelfComm(), virtual_batch_size=2),
    "SyncBatchRenorm": lambda: SyncBatchRenorm(3, comm=SelfComm()),
}
OTHERS = {
    "Dense": lambda: Dense(3, 2, seed=0),
    "Conv2D": lambda: Conv2D(3, 2, 2, seed=0, padding="same"),
    "MaxPool2D": lambda: MaxPool2D(2),
    "GlobalAveragePool2D": GlobalAveragePool2D,
    "Flatten": Flatten,
    "Dropout": lambda: Dropout(0.5, seed=0),
    "ReLU": ReLU,
    "Sigmoid": Sigmoid,
    "Tanh": Tanh,
    "Softmax": Softmax,
    "ChannelAffine": lambda: ChannelAffine(3),
    "Sequential": lambda: Sequential([Dense(3, 4, seed=0), BatchNorm(4), ReLU()]),
}
WARM_SHAPE = {k: (2, 4, 4, 3) for k in ("Conv2D", "MaxPool2D", "GlobalAveragePool2D")}


@st.composite
def arrays(draw: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A random array: dtype, shape (rank 1-4, C = 3 mostly last), scale and special values."""
    dtype = draw(st.sampled_from(DTYPES))
    if shape is None:
        rank = draw(st.sampled_from([1, 2, 2, 4, 4]))
        dims = [draw(st.sampled_from([0, 1, 2, 4, 5])) for _ in range(rank - 1)]
        shape = (*dims, draw(st.sampled_from([3, 3, 3, 2])))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1.0, 1e3]))
    x = np.random.default_rng(seed).normal(1.0, scale, size=shape)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2])) if x.size else 0):
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(SPECIALS))
    with np.errstate(all="ignore"):
        return x.astype(dtype) if dtype is not object else x.astype(object)


def snapshot(layer: Any) -> dict[str, bytes]:
    return {f"{s}:{k}": np.asarray(v).tobytes() for s in ("params", "grads", "buffers")
            for k, v in getattr(layer, s).items()}  # fmt: skip


def moderate(a: np.ndarray) -> bool:
    if a.dtype.kind != "f":
        return False
    with np.errstate(all="ignore"):
        return bool(np.isfinite(a).all() and (np.abs(a.astype(np.float64)) <= 1e4).all())


def call(fn: Any, *args: Any, allowed: tuple[type, ...] = DOCUMENTED) -> tuple[Any, Any]:
    """``fn(*args)``; a documented error is returned with a message check, others propagate."""
    try:
        with np.errstate(all="ignore"):
            return fn(*args), None
    except allowed as exc:
        assert len(str(exc)) > 20, f"{type(exc).__name__} without a useful message: {exc!r}"
        return None, exc


def expected_bn(layer: Any, x: np.ndarray, before: dict[str, np.ndarray]) -> np.ndarray | None:
    """float64 y of the BN family where a closed form is simple (else None)."""
    ax = layer.axis % x.ndim
    shape = [1] * x.ndim
    shape[ax] = x.shape[ax]
    x64 = x.astype(np.float64)
    gamma = before.get("gamma", np.ones(3)).astype(np.float64).reshape(shape)
    beta = before.get("beta", np.zeros(3)).astype(np.float64).reshape(shape)
    if not layer.training and "running_mean" in before:
        mean, var = before["running_mean"], before["running_var"]
    elif type(layer) is BatchNorm and layer.virtual_batch_size is None:
        red = tuple(i for i in range(x.ndim) if i != ax)
        mean, var = x64.mean(axis=red), x64.var(axis=red)
    else:
        return None
    mean, var = (np.asarray(s, np.float64).reshape(shape) for s in (mean, var))
    xhat = (x64 - mean) / np.sqrt(var + layer.eps)
    return gamma * xhat + beta


def check_layer(factory: Any, x: np.ndarray, dy_seed: int, train: bool, name: str) -> None:
    layer = factory()
    warm = np.random.default_rng(0).normal(size=WARM_SHAPE.get(name, (4, 3))).astype(np.float32)
    layer.backward(np.ones_like(layer.forward(warm)))
    layer.train(train)
    before = snapshot(layer)
    state = {**layer.params, **layer.buffers}
    arrays_before = {k: np.array(v, copy=True) for k, v in state.items()}
    x_bytes = x.tobytes() if x.dtype != object else None
    y, err = call(layer.forward, x)
    if x_bytes is not None:
        assert x.tobytes() == x_bytes, "forward modified its input"
    if err is not None:
        event(f"forward: {type(err).__name__}")
        assert snapshot(layer) == before, f"{name}: state changed on {err!r}"
        return
    assert isinstance(y, np.ndarray) and y.dtype.kind == "f", f"{name}: output {type(y)}"
    if moderate(x):
        assert np.isfinite(y).all(), f"{name}: non-finite output for finite input"
        want = expected_bn(layer, x, arrays_before) if name in BN_FAMILY else None
        if want is not None:
            event("forward: checked against the float64 formula")
            tol = TOL[np.dtype(x.dtype)] * (1.0 + np.abs(want).max(initial=0.0))
            np.testing.assert_allclose(y.astype(np.float64), want, atol=tol, rtol=0)
    dy = np.random.default_rng(dy_seed).normal(size=y.shape).astype(y.dtype)
    if dy.size and dy_seed % 3 == 0:
        dy.flat[dy_seed % dy.size] = np.nan
    mid = snapshot(layer)
    # RuntimeError: the protocol's "backward needs a training-mode forward" (ChannelAffine)
    dx, err = call(layer.backward, dy, allowed=(*DOCUMENTED, RuntimeError))
    if err is not None:
        event(f"backward: {type(err).__name__}")
        assert snapshot(layer) == mid, f"{name}: backward changed state on {err!r}"
    elif moderate(x) and moderate(dy) and dx is not None:
        assert np.isfinite(dx).all(), f"{name}: non-finite dx for finite x and dy"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(BN_FAMILY)),
    x=arrays(),
    dy_seed=st.integers(0, 1000),
    train=st.booleans(),
)
def test_fuzz_batch_norm_layers(name, x, dy_seed, train):
    check_layer(BN_FAMILY[name], x, dy_seed, train, name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(OTHERS)),
    x=arrays(),
    dy_seed=st.integers(0, 1000),
    train=st.booleans(),
)
def test_fuzz_other_layers(name, x, dy_seed, train):
    check_layer(OTHERS[name], x, dy_seed, train, name)


VECTORS = st.sampled_from(["ones", "random", "nan", "negative", "complex", "short", "none"])


def vector(kind: str, seed: int) -> Any:
    v = np.random.default_rng(seed).uniform(0.5, 2.0, size=3)
    choices = {"ones": np.ones(3), "random": v, "nan": np.array([1.0, np.nan, 1.0])}
    choices.update({"negative": -v, "complex": v.astype(complex), "short": v[:2], "none": None})
    return choices[kind]


def check_kernel(name: str, x: np.ndarray, g: Any, b: Any, v: Any, eps: float) -> None:
    inputs = [a for a in (x, g, b, v) if isinstance(a, np.ndarray) and a.dtype != object]
    saved = [a.tobytes() for a in inputs]
    mean = None if v is None else np.zeros(3)
    fns = {
        "batch_norm_forward": lambda: K.batch_norm_forward(x, g, b, eps=eps),
        "batch_norm_inference": lambda: K.batch_norm_inference(x, mean, v, g, b, eps=eps),
        "batch_norm_inference_backward": lambda: K.batch_norm_inference_backward(
            x, x, mean, v, g, eps=eps
        ),
        "moments": lambda: K.moments(x),
        "batch_renorm_forward": lambda: K.batch_renorm_forward(x, g, b, mean, v, eps=eps),
        "batch_renorm_inference": lambda: K.batch_renorm_inference(x, mean, v, g, b),
    }
    out, err = call(fns[name])
    event(f"{name}: {'ok' if err is None else type(err).__name__}")
    assert [a.tobytes() for a in inputs] == saved, f"{name} modified an input"
    if err is not None or not moderate(x):
        return
    first = out[0] if isinstance(out, tuple) else out
    assert np.isfinite(np.asarray(first)).all(), f"{name}: non-finite result for finite input"
    if name == "batch_norm_forward" and x.size:
        red = tuple(range(x.ndim - 1))
        x64 = x.astype(np.float64)
        gg = np.ones(x.shape[-1]) if g is None else np.asarray(g, np.float64)
        bb = np.zeros(x.shape[-1]) if b is None else np.asarray(b, np.float64)
        want = gg * (x64 - x64.mean(axis=red)) / np.sqrt(x64.var(axis=red) + eps) + bb
        tol = TOL[np.dtype(x.dtype)] * (1.0 + np.abs(want).max())
        np.testing.assert_allclose(first.astype(np.float64), want, atol=tol, rtol=0)
        dx, dg, db = K.batch_norm_backward(np.ones_like(x), out[1])
        assert np.isfinite(dx).all() and np.isfinite(dg).all() and np.isfinite(db).all()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(
        [
            "batch_norm_forward",
            "batch_norm_inference",
            "batch_norm_inference_backward",
            "moments",
            "batch_renorm_forward",
            "batch_renorm_inference",
        ]
    ),  # fmt: skip
    x=arrays(),
    g=VECTORS,
    b=VECTORS,
    v=VECTORS,
    seed=st.integers(0, 100),
    eps=st.sampled_from([1e-5, 1e-3, 0.0, -1.0, float("nan"), float("inf")]),
)
def test_fuzz_kernels(name, x, g, b, v, seed, eps):
    check_kernel(name, x, vector(g, seed), vector(b, seed + 1), vector(v, seed + 2), eps)


def test_fuzz_arrays_cover_the_hostile_cases():
    """The strategy really produces every dtype, empty arrays and special values."""
    seen: dict[str, set[Any]] = {"dtype": set(), "empty": set(), "nan": set()}

    @settings(max_examples=300, deadline=None)
    @given(x=arrays())
    def record(x: np.ndarray) -> None:
        seen["dtype"].add(np.dtype(x.dtype).kind)
        seen["empty"].add(x.size == 0)
        if x.dtype.kind == "f":
            seen["nan"].add(bool(np.isnan(x).any()))

    record()
    assert seen["dtype"] == {"f", "i", "b", "c", "O"}
    assert seen["empty"] == {True, False} and seen["nan"] == {True, False}


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


OTHER_KERNELS = {
    "relu": lambda x: K.relu(x),
    "sigmoid": lambda x: K.sigmoid(x),
    "tanh": lambda x: K.tanh(x),
    "softmax": lambda x: K.softmax(x),
    "relu_backward": lambda x: K.relu_backward(x, x),
    "sigmoid_backward": lambda x: K.sigmoid_backward(x, x),
    "tanh_backward": lambda x: K.tanh_backward(x, x),
    "softmax_backward": lambda x: K.softmax_backward(x, x),
    "im2col": lambda x: K.im2col(x, (2, 2)),
    "max_pool_forward": lambda x: K.max_pool_forward(x, (2, 2), (2, 2))[0],
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(OTHER_KERNELS)), x=arrays())
def test_fuzz_other_kernels(name, x):
    """Activations, im2col and pooling: a documented error, or a finite result for finite
    input; the input is never modified."""
    saved = x.tobytes() if x.dtype != object else None
    out, err = call(OTHER_KERNELS[name], x)
    event(f"{name}: {'ok' if err is None else type(err).__name__}")
    if saved is not None:
        assert x.tobytes() == saved, f"{name} modified its input"
    if err is None and moderate(x):
        assert np.isfinite(np.asarray(out)).all(), f"{name}: non-finite result for finite input"
