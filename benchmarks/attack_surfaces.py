"""Issue 23's closing attack on the surfaces added since its second pass (BN kernels per call with
``out=``, chunk threads in Conv2D/Winograd/Dense, Winograd's U cache, the claims experiments under
mpiexec): ``run(case, tmp)``, called by ``benchmarks/attack.py`` with its recorder ``case``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bnlab import kernels as K
from bnlab import layers as L
from bnlab import optim
from bnlab.runtime import kernel_threads

Case = Callable[..., None]
RNG = np.random.default_rng(5)
XB = RNG.normal(size=(16, 5)).astype(np.float32)
G5, B5 = np.ones(5), np.zeros(5)


def bn_kernels(case: Case) -> None:
    """out= aliasing/dtype/layout, odd inputs, overflow of y and dx, groups, eps."""
    s, fwd, inf = "BN per call", K.batch_norm_forward, K.batch_norm_inference
    y, cache = fwd(XB, G5, B5)
    x2, ro = XB.copy(), np.empty_like(XB)
    ro.flags.writeable = False
    outs = {"x itself": x2, "a view of x": x2[::1], "float64": np.empty(XB.shape),
            "Fortran": np.empty((5, 16), np.float32).T, "read-only": ro, "a list": [0.0],
            "wrong shape": np.empty((16, 4), np.float32)}  # fmt: skip
    for name, out in outs.items():
        case(s, f"forward out={name}", lambda o=out: fwd(x2, G5, B5, out=o), match="out")
        case(s, f"inference out={name}", lambda o=out: inf(x2, B5, G5, G5, B5, out=o), match="out")
    dy = np.ones_like(XB)
    case(s, "backward out=dy", lambda: K.batch_norm_backward(dy, cache, out=dy), match="out")
    case(s, "backward out=x", lambda: K.batch_norm_backward(dy, cache, out=cache.x), match="out")
    for dt in (int, bool, complex, object):
        case(s, f"x {np.dtype(dt)}", lambda d=dt: fwd(XB.astype(d), G5, B5), match="x must")
    for name, x in (("Fortran", np.asfortranarray(XB)), ("negative strides", XB[::-1, ::-1])):
        case(s, f"x {name} = C-contiguous copy", lambda x=x: np.array_equal(fwd(x, G5, B5)[0],
             fwd(np.ascontiguousarray(x), G5, B5)[0]) or 1 / 0, expect_error=False)  # fmt: skip
    case(s, "empty batch fwd+bwd", lambda: K.batch_norm_backward(XB[:0], fwd(XB[:0], G5, B5)[1]),
         expect_error=False)  # fmt: skip
    for gname, g in (("bool", G5 > 0), ("complex", G5 + 0j), ("object", G5.astype(object)),
                     ("(5, 1)", G5[:, None]), ("str", "abcde"), ("NaN", G5 * np.nan)):  # fmt: skip
        case(s, f"gamma {gname}", lambda g=g: fwd(XB, g, B5), match="gamma")
    big = np.full(5, 3e38)
    case(s, "y overflow: gamma 3e38", lambda: fwd(XB, big, B5), match="overflows")
    case(s, "y overflow: beta 3e38", lambda: fwd(XB, big, big), match="overflows")
    case(s, "y overflow: float16 x, gamma 1e5",
         lambda: fwd(XB.astype(np.float16), G5 * 1e5, B5), match="overflows")  # fmt: skip
    case(s, "inference overflow: var 0, |x| 1e37",
         lambda: inf(XB * 1e37, B5, B5, G5, B5), match="overflows")  # fmt: skip
    case(s, "inference overflow: gamma 1e300 for float32 x",
         lambda: inf(XB, B5, G5, G5 * 1e300, B5), match="overflows")  # fmt: skip
    case(
        s,
        "inference NaN x passes on (as PyTorch)",
        lambda: np.isnan(inf(XB * np.nan, B5, G5, G5, B5)).all() or 1 / 0,
        expect_error=False,
    )
    c30 = fwd(XB, np.full(5, 1e30), B5)[1]
    dyr = RNG.normal(size=XB.shape).astype(np.float32) * np.float32(1e20)
    case(s, "dx overflow: gamma 1e30, dy 1e20",
         lambda: K.batch_norm_backward(dyr, c30), match="overflows")  # fmt: skip
    x3 = RNG.normal(size=(16, 5, 2)).astype(np.float32)
    for groups in (3, 0, [(0, 20)], [(3, 1)], "ab", 2.5):
        case(s, f"groups={groups!r}", lambda g=groups: fwd(x3, G5[:5], B5, axis=1, groups=g),
             match="groups")  # fmt: skip
    for eps in (0.0, -1.0, np.inf, np.nan, "x", np.array([1e-5, 1])):
        case(s, f"eps={eps!r}", lambda e=eps: fwd(XB, G5, B5, eps=e), match="eps")


def bn_layers(case: Case) -> None:
    """Buffers and params of a BN layer replaced by hand; float32 layer with float64 input."""
    s = "BN per call"
    bad = {"running_mean": [np.zeros(9, np.float32), np.zeros(3, np.float32), [0.0] * 5,
                            np.zeros(5, np.float16), np.zeros(5, int), np.zeros(5, complex)],
           "running_var": [np.zeros((5, 1), np.float32)],
           "num_batches_tracked": [np.array(2.5), np.array([1, 2]), 3]}  # fmt: skip
    for kind in ("BatchNorm", "BatchRenorm"):
        for key, values in bad.items():
            for v in values:
                label = f"{kind} train buffers[{key}] = {type(v).__name__} {np.shape(v)}"
                case(s, label, lambda k=kind, key=key, v=v: _bn_with(k, key, v), match=key)
    for key, value in (("running_mean", np.nan), ("running_var", -1.0)):
        case(s, f"BatchNorm train {key} holding {value}",
             lambda k=key, v=value: _bn_with("BatchNorm", k, v), match="set by hand")  # fmt: skip
    case(s, "BatchNorm.astype(float16)", lambda: L.BatchNorm(5).astype(np.float16), match="dtype")
    for momentum in (np.nan, 2, True, "0.1"):
        case(s, f"momentum={momentum!r}", lambda m=momentum: L.BatchNorm(5, momentum=m))
    case(s, "ghost batch of 1 (16 by 5)", lambda: L.BatchNorm(5, virtual_batch_size=5)
         .forward(XB), match="more than 1 value")  # fmt: skip

    bn = L.BatchNorm(5)  # a float32 layer, float64 x: float64 y and dx, float32 grads
    case(s, "float32 layer, float64 x", lambda: bn.backward(bn.forward(XB.astype(np.float64))),
         expect_error=False)  # fmt: skip
    case(s, "float32 layer, float64 x, dy 1e300: dgamma overflows", lambda: _grads_1e300(
         L.BatchNorm(5)), match="dgamma overflows")  # fmt: skip
    case(s, "BatchRenorm train running_var holding -1", lambda: _bn_with("BatchRenorm",
         "running_var", -1.0), match="set by hand")  # fmt: skip
    for norm in ("GroupNorm(1, 5)", "LayerNorm(5)"):
        layer = eval(f"L.{norm}")  # noqa: S307 - fixed strings
        case(s, f"{norm} float64 x, dy 1e300: dgamma overflows",
             lambda n=layer: _grads_1e300(n), match="dgamma overflows")  # fmt: skip
        layer = eval(f"L.{norm}")  # noqa: S307 - fixed strings
        layer.params["gamma"][...] = layer.params["beta"][...] = 3e38
        case(s, f"{norm} y overflow: gamma, beta 3e38",
             lambda n=layer: n.forward(XB), match="overflows")  # fmt: skip


def _grads_1e300(layer: Any) -> Any:
    y = layer.forward(XB.astype(np.float64))
    before = {k: v.copy() for k, v in layer.grads.items()}
    try:
        return layer.backward(RNG.normal(size=y.shape) * 1e300)
    finally:
        if any(not np.array_equal(v, layer.grads[k]) for k, v in before.items()):
            raise AssertionError("grads written before the refusal")


def _bn_with(kind: str, key: str, value: Any) -> Any:
    bn = getattr(L, kind)(5)
    if np.isscalar(value) and isinstance(value, float):
        bn.buffers[key][...] = value
    else:
        bn.buffers[key] = value
    before = {k: np.array(v, copy=True) for k, v in bn.buffers.items() if k != key}
    try:
        return bn.forward(XB)
    finally:
        if any(not np.array_equal(bn.buffers[k], v) for k, v in before.items()):
            raise AssertionError("a buffer changed before the refusal")


def thread_cases(case: Case) -> None:
    """kernel_threads values, determinism, closeness, a failing chunk thread, leaked threads."""
    s = "threads"
    for n in (0, -1, True, "2", 2.5, None, 10**9, np.int64(2)):
        ok = n is None or n == 10**9 or type(n) is np.int64
        case(s, f"kernel_threads({n!r})", lambda n=n: _in_threads(n), expect_error=not ok,
             match="kernel_threads")  # fmt: skip
    x = RNG.normal(size=(64, 12, 12, 8)).astype(np.float32)
    for alg in ("im2col", "winograd"):
        for batch in (64, 1):
            case(s, f"{alg} batch {batch}: 2 threads deterministic, close to 1",
                 lambda a=alg, b=batch: _two_vs_one(a, x[:b]), expect_error=False)  # fmt: skip
        case(s, f"{alg}: a chunk thread failing leaves the layer as it was",
             lambda a=alg: _failing_thread(a, x), match="injected")  # fmt: skip
        case(s, f"{alg}: overflow on 2 threads refused, grads kept",
             lambda a=alg: _overflow_2(a, x), match="overflowed")  # fmt: skip
    d = L.Dense(1024, 512, seed=0)
    xd = RNG.normal(size=(8, 1024)).astype(np.float32)
    case(s, "wide Dense 2 threads = 1 thread", lambda: _dense_same(d, xd), expect_error=False)
    for dt in (complex, int, object, "U1"):
        case(s, f"Dense.backward dy {np.dtype(dt)}",  # after _dense_same's forward
             lambda t=dt: d.backward(np.ones((8, 512)).astype(t)), match="dy")  # fmt: skip
    case(s, "no thread leaked after 300 threaded calls", _no_leak, expect_error=False)


def _in_threads(n: Any) -> int:
    with kernel_threads(n):
        return 1


def _conv_run(alg: str, x: np.ndarray, threads: int) -> tuple[np.ndarray, ...]:
    c = L.Conv2D(8, 16, 3, padding="same", algorithm=alg, seed=0)
    with kernel_threads(threads):
        y = c.forward(x)
        dx = c.backward(np.ones_like(y))
    return y, dx, c.grads["W"].copy(), c.grads["b"].copy()


def _two_vs_one(alg: str, x: np.ndarray) -> None:
    one, two, again = _conv_run(alg, x, 1), _conv_run(alg, x, 2), _conv_run(alg, x, 2)
    if not all(np.array_equal(a, b) for a, b in zip(two, again, strict=True)):
        raise AssertionError("2 threads: not the same bits twice")
    for a, b in zip(one, two, strict=True):
        if not np.allclose(a, b, rtol=1e-5, atol=1e-4 * float(np.abs(a).max())):
            raise AssertionError("2 threads far from 1")


def _failing_thread(alg: str, x: np.ndarray) -> Any:
    import bnlab.kernels.winograd as kw
    import bnlab.layers.conv2d as kc

    mod, name = (kc, "col2im") if alg == "im2col" else (kw, "_run")
    c = L.Conv2D(8, 16, 3, padding="same", algorithm=alg, seed=0)
    orig = getattr(mod, name)

    def bad(*a: Any, **k: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("injected failure in a chunk thread (a test)")
        return orig(*a, **k)

    with kernel_threads(2):
        y = c.forward(x)
        c.backward(np.ones_like(y))
        grads, saved = {k: v.copy() for k, v in c.grads.items()}, c._x
        setattr(mod, name, bad)
        try:
            return c.forward(x * 2) if alg == "winograd" else c.backward(np.ones_like(y))
        finally:
            setattr(mod, name, orig)
            if c._x is not saved or any(
                not np.array_equal(v, c.grads[k]) for k, v in grads.items()
            ):
                raise AssertionError("the layer changed")


def _overflow_2(alg: str, x: np.ndarray) -> Any:
    c = L.Conv2D(8, 16, 3, padding="same", algorithm=alg, seed=0)
    with kernel_threads(2), np.errstate(all="raise"):
        y = c.forward(x)
        c.backward(np.ones_like(y))
        grads = {k: v.copy() for k, v in c.grads.items()}
        try:
            return c.backward(np.full_like(y, 3e38))
        finally:
            if any(not np.array_equal(v, c.grads[k]) for k, v in grads.items()):
                raise AssertionError("grads changed")


def _dense_same(d: Any, x: np.ndarray) -> None:
    got = []
    for t in (1, 2):
        with kernel_threads(t):
            y = d.forward(x)
            got.append((y.copy(), d.backward(np.ones_like(y)).copy(), d.grads["W"].copy()))
    if not all(np.array_equal(a, b) for a, b in zip(*got, strict=True)):
        raise AssertionError("2 threads differ from 1")


def _no_leak() -> None:
    for _ in range(300):
        with kernel_threads(2):
            c = L.Conv2D(8, 4, 3, padding="same", algorithm="winograd", seed=0)
            c.forward(np.ones((2, 6, 6, 8), np.float32))
    if threading.active_count() > 1 + (os.cpu_count() or 2):
        raise AssertionError(f"{threading.active_count()} threads alive")


def transform_cache(case: Case) -> None:
    """W changed every way a user can; the Winograd layer must match a fresh im2col layer."""
    s = "Winograd U cache"
    x = RNG.normal(size=(2, 6, 6, 8)).astype(np.float32)
    shape = (3, 3, 8, 4)

    def sgd(c: Any) -> None:
        c.backward(np.ones((2, 6, 6, 4), np.float32))
        optim.SGD.from_model(c, lr=0.5).step()

    edits: dict[str, Callable[[Any], Any]] = {
        "params[...] =": lambda c: c.params["W"].__setitem__(Ellipsis, 0.5),
        "np.copyto": lambda c: np.copyto(c.params["W"], RNG.normal(size=shape)),
        "a view written": lambda c: c.params["W"][0, 0].__setitem__(Ellipsis, 3.0),
        "a reshaped view written": lambda c: c.params["W"].reshape(-1).__setitem__(5, 9.0),
        "an SGD step": sgd,
        "load_state_dict": lambda c: c.load_state_dict({**c.state_dict(), "W": np.ones(shape)}),
        "a Fortran W": lambda c: c.params.__setitem__("W", np.asfortranarray(c.params["W"] * 2)),
        "astype(float64)": lambda c: c.astype(np.float64),
        "W = -0.0": lambda c: c.params["W"].__setitem__(Ellipsis, -0.0),
        "after a refused overflow": lambda c: _after_overflow(c, x),
    }  # fmt: skip
    for name, edit in edits.items():
        case(s, f"W changed by {name}", lambda e=edit: _vs_im2col(e, x), expect_error=False)
    for name, value in (("float64 W, float32 grads", np.ones(shape)), ("a list", [[0.0]]),
                        ("float16", np.ones(shape, np.float16)), ("int", np.ones(shape, int)),
                        ("shape (3,3,8,5)", np.ones((3, 3, 8, 5), np.float32)),
                        ("shape (5,5,8,4)", np.ones((5, 5, 8, 4), np.float32))):  # fmt: skip
        case(s, f"W replaced by {name}", lambda v=value: _replaced(v, x), match="params[")
    xw, w = np.ascontiguousarray(x[:1, ..., :4]), np.ones((3, 3, 4, 4), np.float32)
    dyw, wg = np.ones((1, 6, 6, 4), np.float32), K.winograd_conv3x3
    for name, kw in (
        ("out=x", {"out": xw}),
        ("pads 1.5", {"pads": (1.5, 1, 1, 1)}),
        ("b complex", {"b": np.ones(4, complex)}),
        ("b 'abcd'", {"b": "abcd"}),
    ):
        case(s, f"winograd_conv3x3 {name}", lambda kw=kw: wg(xw, w, **kw))  # fmt: skip
    for name, kw in (("dx_out=dy", {"dx_out": dyw}), ("dW_out=W", {"dW_out": w})):
        case(s, f"winograd backward {name}", lambda kw=kw: K.winograd_conv3x3_backward(
             xw, w, dyw, **kw), match="shares")  # fmt: skip


def _after_overflow(c: Any, x: np.ndarray) -> None:
    try:
        c.forward(np.full_like(x, 3e38))
    except FloatingPointError:
        pass
    c.params["W"][...] *= 2


def _vs_im2col(edit: Callable[[Any], Any], x: np.ndarray) -> None:
    c = L.Conv2D(8, 4, 3, padding="same", algorithm="winograd", seed=0)
    c.forward(x)
    edit(c)
    W = c.params["W"]
    f = L.Conv2D(8, 4, 3, padding="same", algorithm="im2col", seed=0).astype(W.dtype)
    f.params["W"][...] = W
    f.params["b"][...] = c.params["b"]
    xs = x.astype(W.dtype)
    y, yf = c.forward(xs), f.forward(xs)
    dx, dxf = c.backward(np.ones_like(y)), f.backward(np.ones_like(yf))
    for a, b in ((y, yf), (dx, dxf), (c.grads["W"], f.grads["W"])):
        if not np.allclose(a, b, rtol=1e-4, atol=1e-4):
            raise AssertionError(f"Winograd differs from im2col by {np.abs(a - b).max():.3g}")


def _replaced(value: Any, x: np.ndarray) -> Any:
    c = L.Conv2D(8, 4, 3, padding="same", algorithm="winograd", seed=0)
    c.forward(x)
    c.params["W"] = value
    return c.forward(x)


MPIEXEC = Path(sys.executable).parent / "mpiexec"
SMALL = ["--steps", "4", "--hidden", "8", "--eval-examples", "100", "--no-progress"]


def mpi_cases(case: Case, tmp: str) -> None:
    """The claims experiments under mpiexec: each refusal in one line per rank, exit != 0 within
    the timeout, --out untouched; a signal ends the job with the run marked."""
    if not MPIEXEC.exists():
        return
    s = "claims under mpiexec"
    for exp in ("naive-normalization", "scale-invariance", "covariate-shift"):
        out = f"{tmp}/{exp}"
        for name, ranks in (("seed differs", [["--seed", "0"], ["--seed", "1"]]),
                            ("bad --steps on rank 1", [[], ["--steps", "-1"]]),
                            ("--out differs", [["--out", out + "A"], ["--out", out + "B"]]),
                            ("batch 2 on 3 ranks", [["--batch-size", "2"]] * 3)):  # fmt: skip
            case(s, f"{exp}: {name}", lambda e=exp, r=ranks, o=out: _refused(e, r, o))
    case(s, "naive-normalization: SIGTERM on mpiexec", lambda: _signal(tmp), match="interrupted")


def _mpi(exp: str, ranks: list[list[str]], out: str, timeout: float = 120) -> tuple[Any, str]:
    cmd = [str(MPIEXEC)]
    for i, extra in enumerate(ranks):
        cmd += [":"] * bool(i) + ["-n", "1", sys.executable, "-m", "bnlab", "run", exp, *SMALL]
        cmd += extra if "--out" in extra else [*extra, "--out", out]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "hung", ""
    return p.returncode, p.stderr


def _refused(exp: str, ranks: list[list[str]], out: str) -> None:
    code, err = _mpi(exp, ranks, out)
    written = [p for p in (out, out + "A", out + "B") if os.path.exists(p)]
    for p in written:
        shutil.rmtree(p)
    if code in (0, "hung") or "Traceback" in err or written:
        raise AssertionError(f"exit {code}, traceback {'Traceback' in err}, written {written}")
    raise ValueError(f"refused: {err.strip().splitlines()[0][:100]}")


def _signal(tmp: str) -> None:
    out = f"{tmp}/sigterm"
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "bnlab", "run", "naive-normalization"]
    cmd += [*SMALL[2:], "--steps", "100000", "--hidden", "8", "--out", out]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(f"{out}/metrics.json"):
        time.sleep(0.5)
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("SIGTERM: the job hung") from None
    status = (Path(out) / "metrics.json").read_text() if os.path.exists(out) else ""
    if '"interrupted"' not in status or "Traceback" in err:
        raise AssertionError(f"exit {p.returncode}, status not interrupted: {err[-200:]}")
    raise RuntimeError("SIGTERM: exit 130 and the partial run marked interrupted (as expected)")


def run(case: Case, tmp: str) -> None:
    """Every section above (the MPI one only where mpiexec is next to this Python)."""
    bn_kernels(case)
    bn_layers(case)
    thread_cases(case)
    transform_cache(case)
    mpi_cases(case, tmp)
