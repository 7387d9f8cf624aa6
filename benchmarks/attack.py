"""Hostile-input attack over the surfaces of issue 23 (second pass): a scripted set of cases,
each "ok" when it ends in a clear exception (TypeError/ValueError/FloatingPointError/
RuntimeError naming the argument) or a documented result, "BAD" when it crashes with an
unrelated error, returns NaN/Inf silently or changes state. Prints the table (surface, cases,
bad) and the bad cases. Run: PYTHONPATH=src python benchmarks/attack.py
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

import bnlab
from bnlab import kernels as K
from bnlab import layers as L

CLEAR = (TypeError, ValueError, FloatingPointError, RuntimeError, KeyError, OSError)
RESULTS: dict[str, list[tuple[str, bool, str]]] = defaultdict(list)
X = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype(np.float32)
X2 = np.random.default_rng(1).normal(size=(16, 5)).astype(np.float32)


def case(surface: str, name: str, fn: Callable[[], Any], *, expect_error: bool = True) -> None:
    """Run ``fn``; a clear error (or, with ``expect_error=False``, finite output) is ok."""
    try:
        out = fn()
    except CLEAR as e:
        ok = expect_error and len(str(e)) > 20 and not isinstance(e, KeyError)
        RESULTS[surface].append((name, ok, f"{type(e).__name__}: {str(e)[:90]}"))
        return
    except Exception as e:  # noqa: BLE001 - the attack records every crash
        RESULTS[surface].append((name, False, f"crash {type(e).__name__}: {str(e)[:90]}"))
        return
    arrays = [a for a in (out if isinstance(out, tuple) else (out,)) if isinstance(a, np.ndarray)]
    finite = all(np.isfinite(a).all() for a in arrays if a.dtype.kind == "f")
    ok = (not expect_error) and finite
    RESULTS[surface].append((name, ok, "returned" + ("" if finite else " non-finite")))


def kernels() -> None:
    g, b = np.ones(5), np.zeros(5)
    for axis in (1.5, "1", None, True):
        case("kernels", f"batch_norm_forward axis={axis!r}",
             lambda a=axis: K.batch_norm_forward(X2, g, b, axis=a))  # fmt: skip
        case("kernels", f"batch_norm_inference axis={axis!r}",
             lambda a=axis: K.batch_norm_inference(X2, b, g, g, b, axis=a))  # fmt: skip
    case("kernels", "batch_norm_backward(dy, None)", lambda: K.batch_norm_backward(X2, None))
    case("kernels", "batch_norm_backward(dy, 'cache')", lambda: K.batch_norm_backward(X2, "c"))
    rr = K.batch_renorm_forward
    for kw in ({"rmax": 0.5}, {"dmax": -1.0}, {"rmax": 0.0}, {"rmax": np.inf},
               {"rmax": np.nan}, {"dmax": "x"}):  # fmt: skip
        case("kernels", f"batch_renorm_forward {kw}",
             lambda kw=kw: rr(X2, g, b, np.zeros(5), np.ones(5), **kw))  # fmt: skip
    for stride in (0, -1, 1.5, (0, 1)):
        case("kernels", f"im2col stride={stride!r}", lambda s=stride: K.im2col(X, 3, 3, s))
    dy = np.full((16, 5), 3e37, np.float32)
    case("kernels", "backward dbeta overflow float32",
         lambda: K.batch_norm_backward(dy, K.batch_norm_forward(X2, g, b)[1]))  # fmt: skip


def norm_layers() -> None:
    for axis in (1.5, "1", None):
        case(
            "layers", f"BatchNorm axis={axis!r}", lambda a=axis: L.BatchNorm(5, axis=a).forward(X2)
        )
        case("layers", f"GroupNorm axis={axis!r}",
             lambda a=axis: L.GroupNorm(1, 5, axis=a).forward(X2))  # fmt: skip
        case(
            "layers", f"LayerNorm axis={axis!r}", lambda a=axis: L.LayerNorm(5, axis=a).forward(X2)
        )

    def negative_counter() -> Any:
        bn = L.BatchNorm(5, momentum=None)
        bn.num_batches_tracked[...] = -1
        return bn.forward(X2), bn.running_mean

    case("layers", "momentum=None, counter -1", negative_counter)

    def wrong_buffer(key: str, how: str) -> Any:
        bn = L.BatchNorm(5)
        if how == "dict":
            bn.buffers[key] = np.zeros(3, np.float32)
        else:
            bn.load_state_dict({**bn.state_dict(), key: np.zeros(3, np.float32)})
        bn.eval()
        return bn.forward(X2)

    for key in ("running_mean", "running_var"):
        for how in ("dict", "load_state_dict"):
            case("layers", f"{key} of wrong shape ({how})", lambda k=key, h=how: wrong_buffer(k, h))

    def nan_gamma() -> Any:
        bn = L.BatchNorm(5)
        bn.params["gamma"][0] = np.nan
        return bn.forward(X2)

    case("layers", "NaN gamma, training", nan_gamma)
    case("layers", "Dense(seed='x')", lambda: L.Dense(5, 3, seed="x"))
    case("layers", "Dense(seed=1.5)", lambda: L.Dense(5, 3, seed=1.5))
    case("layers", "AvgPool2D(0)", lambda: L.AvgPool2D(0).forward(X))
    case("layers", "AvgPool2D(pool 9 > input 4)", lambda: L.AvgPool2D(9).forward(X))
    case("layers", "GroupNorm(groups=2, C=5)", lambda: L.GroupNorm(2, 5).forward(X2))
    case("layers", "GroupNorm(groups=0)", lambda: L.GroupNorm(0, 5))


def sequential() -> None:
    def nan_dy() -> Any:
        net = L.Sequential([L.Dense(5, 4, seed=0), L.BatchNorm(4), L.Dense(4, 2, seed=1)])
        net.forward(X2)
        before = {k: v.copy() for k, v in net.grads.items()}
        try:
            net.backward(np.full((16, 2), np.nan, np.float32))
        except FloatingPointError:
            same = all(np.array_equal(v, before[k], equal_nan=True) for k, v in net.grads.items())
            if not same:
                raise AssertionError("grads changed after 'nothing was updated'") from None
            raise
        return None

    case("sequential", "backward NaN dy keeps grads", nan_dy)

    def mutate_x() -> Any:  # documented: the backward reads the forward's x (no copy)
        doc = L.BatchNorm.__doc__ or ""
        if "changing ``x`` in place" not in doc:
            raise AssertionError("x mutated between forward and backward: undocumented")
        return None

    case("sequential", "x mutated between forward and backward (documented)", mutate_x,
         expect_error=False)  # fmt: skip

    def lazy_predict() -> Any:
        net = L.Sequential([L.Dense(3), L.BatchNorm()])
        return net.predict(X2), net.predict(X2[:, :4])

    case("sequential", "lazy Dense, predict with another width", lazy_predict)
    case("sequential", "Residual of a non-layer", lambda: L.Residual("abc"))


def interop(tmp: str) -> None:
    from bnlab.deploy import export_onnx, from_torch, to_torch

    net = L.Sequential([L.Dense(6, 3, seed=0)])
    for shape in ("6", 6, (0, 6), (-1, 6), (2.5, 6), None):
        case("interop", f"export_onnx(input_shape={shape!r})",
             lambda s=shape: export_onnx(net, f"{tmp}/m.onnx", input_shape=s))  # fmt: skip
        if shape is not None:  # None: to_torch's documented default
            case("interop", f"to_torch(input_shape={shape!r})",
                 lambda s=shape: to_torch(net, input_shape=s))  # fmt: skip
    for obj in ("abc", 5, None):
        case("interop", f"from_torch({obj!r})", lambda o=obj: from_torch(o))
    case("interop", "bnlab.save(model, directory)", lambda: bnlab.save(net, tmp))
    case("interop", "bnlab.load(missing)", lambda: bnlab.load(f"{tmp}/missing.npz"))
    case("interop", "bnlab.save('abc', path)", lambda: bnlab.save("abc", f"{tmp}/x.npz"))


def main() -> int:
    import tempfile

    np.seterr(all="ignore")
    kernels()
    norm_layers()
    sequential()
    with tempfile.TemporaryDirectory() as tmp:
        interop(tmp)
    print(f"{'surface':12s} {'cases':>5s} {'bad':>4s}")
    for surface, rows in RESULTS.items():
        print(f"{surface:12s} {len(rows):5d} {sum(not ok for _, ok, _ in rows):4d}")
    bad = [(s, n, w) for s, rows in RESULTS.items() for n, ok, w in rows if not ok]
    for s, n, w in bad:
        print(f"BAD {s}: {n}: {w}")
    if "-v" in sys.argv:
        for s, rows in RESULTS.items():
            for n, ok, w in rows:
                print(f"{'ok ' if ok else 'BAD'} {s}: {n}: {w}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
