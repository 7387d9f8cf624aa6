"""Hostile-input attack over the surfaces of issue 23 (second pass): a scripted set of cases,
each "ok" when it ends in a clear exception (TypeError/ValueError/FloatingPointError/
RuntimeError naming the argument) or a documented result, "BAD" when it crashes with an
unrelated error, returns NaN/Inf silently or changes state. Prints the table (surface, cases,
bad) and the bad cases. Run: PYTHONPATH=src python benchmarks/attack.py
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import bnlab
from bnlab import kernels as K
from bnlab import layers as L

CLEAR = (TypeError, ValueError, FloatingPointError, RuntimeError, KeyError, OSError)
RESULTS: dict[str, list[tuple[str, bool, str]]] = defaultdict(list)
X = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype(np.float32)
X2 = np.random.default_rng(1).normal(size=(16, 5)).astype(np.float32)


def case(
    surface: str, name: str, fn: Callable[[], Any], *, expect_error: bool = True, match: str = ""
) -> None:
    """Run ``fn``; a clear error (naming ``match`` if given; with ``expect_error=False``, a
    finite output) is ok."""
    try:
        out = fn()
    except CLEAR as e:
        ok = expect_error and len(str(e)) > 20 and not isinstance(e, KeyError)
        ok = ok and match in str(e)
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
        case("kernels", f"im2col stride={stride!r}",
             lambda s=stride: K.im2col(X, (3, 3), s), match="stride")  # fmt: skip
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
        bn.buffers["num_batches_tracked"][...] = -1
        return bn.forward(X2), bn.running_mean

    case("layers", "momentum=None, counter -1", negative_counter, match="num_batches_tracked")

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
    case("layers", "Dense(seed='x')", lambda: L.Dense(5, 3, seed="x"), match="seed")
    case("layers", "Dense(seed=1.5)", lambda: L.Dense(5, 3, seed=1.5), match="seed")
    case("layers", "Dense init std 1e300",
         lambda: L.Dense(5, 3, init={"name": "normal", "std": 1e300}), match="float32")  # fmt: skip
    case("layers", "AvgPool2D(0)", lambda: L.AvgPool2D(0).forward(X))
    case("layers", "AvgPool2D(pool 9 > input 4)", lambda: L.AvgPool2D(9).forward(X))
    case("layers", "GroupNorm(groups=2, C=5)", lambda: L.GroupNorm(2, 5).forward(X2))
    case("layers", "GroupNorm(groups=0)", lambda: L.GroupNorm(0, 5))


def sequential() -> None:
    def nan_dy() -> Any:
        net = L.Sequential([L.Dense(5, 4, seed=0), L.BatchNorm(4), L.Dense(4, 2, seed=1)])
        net.forward(X2)
        try:
            net.backward(np.full((16, 2), np.nan, np.float32))
        except FloatingPointError as e:
            if "nothing was updated" in str(e) and "grads of the layers after" not in str(e):
                raise AssertionError("says 'nothing was updated' with NaN grads written") from e
            raise
        return None

    case("sequential", "backward NaN dy: message true to the grads", nan_dy)

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


def new_layers(tmp: str) -> None:
    x = X.astype(np.float32)
    for build in ("GroupNorm(3, 3)", "LayerNorm(3)", "AvgPool2D(2)"):
        layer = eval(f"L.{build}")  # noqa: S307 - fixed strings
        if "Pool" not in build:  # pooling passes NaN on, as PyTorch; BN and the loss refuse it
            case("new layers", f"{build} NaN input", lambda lay=layer: lay.forward(x * np.nan))
        case("new layers", f"{build} int input", lambda lay=layer: lay.forward(x.astype(int)))
        case("new layers", f"{build} 1-d input", lambda lay=layer: lay.forward(x[0, 0, 0]))
    bad_layers = ["GroupNorm(3, 3, eps=-1)", "GroupNorm(2, 4)", "LayerNorm(0)"]
    bad_layers += ["AvgPool2D((2, 0))", "AvgPool2D(2, stride=0)", "Residual(L.Dense(3), 'x')"]
    for bad in bad_layers:
        case("new layers", bad, lambda b=bad: eval(f"L.{b}").forward(x))  # noqa: S307

    def residual_mismatch() -> Any:
        return L.Residual(L.Sequential([L.Dense(3, 4, seed=0)])).forward(X2[:, :3])

    case("new layers", "Residual branch of another width", residual_mismatch)
    net = L.Sequential([L.Dense(4), L.BatchNorm()])
    case(
        "new layers",
        "predict before any forward (lazy)",
        lambda: net.predict(X2),
        expect_error=False,
    )
    case("new layers", "predict batch_size=0", lambda: net.predict(X2, batch_size=0))
    case("new layers", "predict int input", lambda: net.predict(X2.astype(int)))
    case("new layers", "bnlab.load(text file)", lambda: bnlab.load(_write(tmp, "t.npz", b"x")))


def _write(tmp: str, name: str, data: bytes) -> str:
    path = f"{tmp}/{name}"
    with open(path, "wb") as f:
        f.write(data)
    return path


def cli_runs(tmp: str) -> None:
    """Bad option values of the new experiments: exit 2, one line, --out untouched."""
    import contextlib
    import io

    from bnlab import cli

    bad = {
        "naive-normalization": [["--steps", "-1"], ["--lr", "nan"], ["--eps", "0"],
                                ["--batch-size", "1"], ["--hidden", "0"], ["--activation", "x"]],
        "scale-invariance": [["--scales", "0"], ["--scales", "inf"], ["--l", "-1"],
                             ["--record-every", "0"], ["--eval-examples", "0"]],
        "covariate-shift": [["--noise-scale", "-1"], ["--step-sizes", "nan"], ["--dataset", "x"],
                            ["--measure-every", "0"], ["--cifar", "/nonexistent"]],
    }  # fmt: skip
    for exp, cases in bad.items():
        for args in cases:
            out = f"{tmp}/{exp}-{len(os.listdir(tmp))}"

            def one(a: list[str] = args, e: str = exp, o: str = out) -> Any:
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    try:
                        code = cli.main(["run", e, *a, "--no-progress", "--out", o])
                    except SystemExit as exit_:  # argparse's refusal
                        code = exit_.code
                        err.write(err.getvalue().splitlines()[-1] if err.getvalue() else "")
                text = err.getvalue().strip()
                text = text.splitlines()[-1] if isinstance(code, int) and code == 2 else text
                if code != 2 or os.path.exists(o) or "Traceback" in err.getvalue():
                    raise AssertionError(f"exit {code}, out written {os.path.exists(o)}: {text}")
                raise ValueError(f"refused in one line: {text[:80]}")

            case("cli new experiments", f"{exp} {' '.join(args)}", one)


def run_files(tmp: str) -> None:
    from bnlab import provenance
    from bnlab.experiments import manifest

    d = f"{tmp}/rd"
    os.makedirs(d)
    _write(d, ".bnlab-manifest.json", b"{not json")
    case("manifest/provenance", "corrupt manifest: check_takeover",
         lambda: manifest.check_takeover(Path(d)))  # fmt: skip
    _write(d, ".bnlab-manifest.json", b'{"files": {"../../etc/passwd": 1}}')
    case("manifest/provenance", "manifest naming a path outside: clear() keeps it",
         lambda: _clear_keeps(d, manifest))  # fmt: skip
    case("manifest/provenance", "differences(None, garbage)",
         lambda: provenance.differences(None, {"x": object()}), expect_error=False)  # fmt: skip
    case("manifest/provenance", "summary({})", lambda: provenance.summary({}), expect_error=False)


def _clear_keeps(d: str, manifest: Any) -> None:
    outside = Path(d).parent / "victim.txt"
    outside.write_text("mine")
    _write(d, ".bnlab-manifest.json", b'{"files": {"../victim.txt": {}}}')
    manifest.clear(Path(d))
    if not outside.exists():
        raise AssertionError("clear() deleted a file outside the run directory")


def main() -> int:
    import tempfile

    np.seterr(all="ignore")
    kernels()
    norm_layers()
    sequential()
    with tempfile.TemporaryDirectory() as tmp:
        interop(tmp)
        new_layers(tmp)
        run_files(tmp)
    with tempfile.TemporaryDirectory() as tmp:
        cli_runs(tmp)
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
