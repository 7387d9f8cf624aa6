"""The one-pass SGD update (bnlab.kernels.sgd) gives the bits of the NumPy code it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.kernels import sgd as K
from bnlab.optim import SGD


def hostile(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Values over many magnitudes (subnormals and near-overflow included), signed zeros."""
    mags = 10.0 ** rng.integers(-42, 36, size=shape)
    a = (rng.standard_normal(shape) * mags).astype(dtype)
    a.flat[:: max(1, a.size // 7)] = -0.0
    return a


def numpy_step(p, g, buf, lr, momentum, first, nesterov):
    """SGD._update's NumPy code (the specification)."""
    tmp = np.empty_like(p)
    if momentum == 0:
        np.multiply(g, lr, out=tmp)
        p -= tmp
        return
    if first:
        buf[...] = g
    else:
        buf *= momentum
        buf += g
    if nesterov:
        np.multiply(buf, momentum, out=tmp)
        tmp += g
    else:
        tmp[...] = buf
    tmp *= lr
    p -= tmp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.5, True)])
@pytest.mark.parametrize("first", [True, False])
def test_fused_update_is_bit_identical(dtype, momentum, nesterov, first):
    rng = np.random.default_rng(3)
    for shape in [(1,), (7,), (100,), (784, 100), (3, 4, 5)]:
        p, g, b = (hostile(rng, shape, dtype) for _ in range(3))
        lr = float(rng.uniform(1e-3, 3.0))
        want_p, want_b = p.copy(), b.copy()
        with np.errstate(all="ignore"):
            numpy_step(want_p, g, want_b, lr, momentum, first, nesterov)
            if momentum == 0:
                K.sgd_update(p, g, lr)
            else:
                K.sgd_momentum_update(p, g, b, lr, momentum, first=first, nesterov=nesterov)
        assert p.tobytes() == want_p.tobytes()
        assert b.tobytes() == want_b.tobytes()


def test_fusable_refuses_what_the_kernel_cannot_take():
    a = np.zeros((4, 3), np.float32)
    assert K.fusable(a, a.copy())
    assert not K.fusable(a, a.astype(np.float64))  # mixed dtypes
    assert not K.fusable(a.T, a.T.copy())  # not C-contiguous
    assert not K.fusable(a.astype(np.float16), a.astype(np.float16))
    ro = a.copy()
    ro.flags.writeable = False
    assert not K.fusable(ro, a) and K.fusable(a, ro)  # only the parameter is written


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}])
def test_sgd_steps_equal_on_fused_and_numpy_paths(kw):
    """The optimizer on C-contiguous arrays (fused) and on transposed views (NumPy fallback)
    takes bit-identical steps."""
    rng = np.random.default_rng(0)
    base = {"W": hostile(rng, (6, 5), np.float32), "b": hostile(rng, (5,), np.float32)}
    fast = {k: v.copy() for k, v in base.items()}
    slow = {"W": np.asfortranarray(base["W"]), "b": base["b"][::-1].copy()[::-1]}
    assert not slow["W"].flags.c_contiguous and not slow["b"].flags.c_contiguous
    gf = {k: np.zeros_like(v) for k, v in fast.items()}
    gs = {"W": np.asfortranarray(np.zeros((6, 5), np.float32)), "b": np.zeros(5, np.float32)}
    opt_f, opt_s = SGD(fast, gf, lr=0.3, **kw), SGD(slow, gs, lr=0.3, **kw)
    for _ in range(4):
        for k in fast:
            g = rng.standard_normal(fast[k].shape).astype(np.float32)
            gf[k][...] = g
            gs[k][...] = g
        with np.errstate(all="ignore"):
            opt_f.step()
            opt_s.step()
        for k in fast:
            assert fast[k].tobytes() == np.ascontiguousarray(slow[k]).tobytes()


def test_a_parameter_made_read_only_after_a_step_is_still_refused():
    """The cached 1-D views would be writeable: the optimizer checks the parameter itself."""
    p = {"W": np.ones((3, 2), np.float32)}
    g = {"W": np.full((3, 2), 0.5, np.float32)}
    opt = SGD(p, g, lr=0.1)
    opt.step()
    p["W"].flags.writeable = False
    before = p["W"].tobytes()
    with pytest.raises(ValueError, match="read-only"):
        opt.step()
    assert p["W"].tobytes() == before


def test_momentum_changed_by_load_state_dict_takes_effect():
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    runs = []
    for switch in (True, False):
        p, g = {"W": w0.copy()}, {"W": np.zeros((4, 3), np.float32)}
        opt = SGD(p, g, lr=0.1, momentum=0.0 if switch else 0.9)
        for i, gi in enumerate(grads):
            if switch and i == 1:  # from plain SGD to momentum 0.9 mid-run
                state = opt.state_dict()
                state["config"]["momentum"] = 0.9
                opt.load_state_dict(state)
                opt.iterations = 0  # the buffer starts from g, as in the other run's first step
            if not switch and i == 0:
                g["W"][...] = gi
                p["W"][...] -= 0.1 * gi  # the plain first step, by hand
                opt.slots["momentum_buffer"]["W"][...] = 0
                continue
            g["W"][...] = gi
            opt.step()
        runs.append(p["W"].copy())
    assert not np.array_equal(runs[0], w0)
    np.testing.assert_array_equal(runs[0], runs[1])
