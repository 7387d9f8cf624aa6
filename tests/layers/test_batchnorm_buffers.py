"""Output buffers of the normalization layers (issues 14, 20).

A layer used on its own returns new arrays (PyTorch's semantics); inside a Sequential
(``reuse_output``) its outputs are its own buffers, overwritten by its next call. Either way
the bits are those of a fresh output, and an output the caller holds never changes.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from bnlab.comm import SelfComm
from bnlab.layers import BatchNorm, BatchRenorm, Sequential, SyncBatchNorm

LAYERS = {
    "bn": lambda C, ax: BatchNorm(C, axis=ax),
    "bn-ghost": lambda C, ax: BatchNorm(C, axis=ax, virtual_batch_size=8),
    "renorm": lambda C, ax: BatchRenorm(C, axis=ax, warmup_steps=0, rmax_steps=2, dmax_steps=2),
    "sync-bn": lambda C, ax: SyncBatchNorm(C, axis=ax, comm=SelfComm()),
}
SHAPES = [((64, 12), -1), ((16, 5, 5, 6), -1), ((12, 6, 7), 1), ((96, 700), -1)]


def batches(shape, steps=4, dtype=np.float32):
    rng = np.random.default_rng(3)
    for step in range(steps):
        x = (rng.normal(0.5, 2.0, size=shape) * (step + 1)).astype(dtype)
        yield x, rng.normal(size=shape).astype(dtype)


def address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def run(layer, shape, reuse: bool, dtype=np.float32):
    """Training steps then an eval pass; bytes of every output, gradient and buffer, with the
    layer's own output buffers (``reuse``, as inside a Sequential) or fresh arrays. Also
    returns the output addresses."""
    layer.reuse_output = reuse
    record, addrs = [], []
    for x, dy in batches(shape, dtype=dtype):
        layer.train()
        y = layer.forward(x)
        record.append(y.tobytes())
        addrs.append(address(y))
        dx = layer.backward(dy)
        record.append(dx.tobytes())
        for name, p in layer.params.items():
            record.append(layer.grads[name].tobytes())
            p -= 0.1 * layer.grads[name]
        record += [b.tobytes() for b in layer.buffers.values()]
    layer.eval()
    for x, _ in batches(shape, steps=2, dtype=dtype):
        record.append(layer.forward(x).tobytes())
    return record, addrs


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_reused_outputs_give_the_bits_of_fresh_ones(kind, shape, axis):
    make = LAYERS[kind]
    fresh, _ = run(make(shape[axis], axis), shape, reuse=False)
    reused, addrs = run(make(shape[axis], axis), shape, reuse=True)
    assert reused == fresh
    assert len(set(addrs)) == 1  # one y buffer, written every step


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_reuse_with_other_dtypes(dtype):
    make = LAYERS["bn"]
    layers = [make(6, -1).astype(dtype) if dtype == np.float64 else make(6, -1) for _ in "ab"]
    assert (
        run(layers[0], (32, 6), reuse=False, dtype=dtype)[0]
        == run(layers[1], (32, 6), reuse=True, dtype=dtype)[0]
    )


def test_an_output_the_caller_holds_never_changes():
    layer = BatchNorm(8)
    data = list(batches((40, 8), steps=6))
    y0 = layer.forward(data[0][0])
    dx0 = layer.backward(data[0][1])
    view = layer.forward(data[1][0])[2:10]  # only a view of the second output is kept
    expect = [a.copy() for a in (y0, dx0, view)]
    for x, dy in data[2:]:
        layer.forward(x)
        layer.backward(dy)
    for got, want in zip((y0, dx0, view), expect, strict=True):
        assert got.tobytes() == want.tobytes()


def test_bad_input_after_reuse_changes_nothing_and_keeps_held_outputs():
    layer = BatchNorm(4)
    data = list(batches((20, 4), steps=3))
    for x, dy in data:
        layer.forward(x)
        layer.backward(dy)
    y = layer.forward(data[0][0])
    y_copy = y.copy()
    state = {k: v.copy() for k, v in {**layer.params, **layer.buffers}.items()}
    bad = data[1][0].copy()
    bad[3, 2] = np.inf
    with pytest.raises(FloatingPointError, match="1 Inf"):
        layer.forward(bad)
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(data[1][0].astype(np.int32))
    assert y.tobytes() == y_copy.tobytes()
    for k, v in {**layer.params, **layer.buffers}.items():
        assert v.tobytes() == state[k].tobytes()


def test_inside_sequential_the_same_bits_as_on_its_own():
    """Sequential: the layer's own buffers (overwritten next call), the same values."""
    alone = BatchNorm(10)
    model = Sequential([copy.deepcopy(alone)])
    for x, dy in batches((50, 10)):
        y = model.forward(x)
        assert y.tobytes() == alone.forward(x).tobytes()
        assert model.backward(dy).tobytes() == alone.backward(dy).tobytes()
    inner = model.layers[0]
    inner.reuse_output = True  # the contract: the next call overwrites the returned array
    a = inner.forward(x)
    b = inner.forward(x * 2)
    assert a is b
