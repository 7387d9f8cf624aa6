"""Hostile-input attack over the surfaces of issue 23 (second pass; attack_surfaces.py: those
added since): each case "ok" when it ends in a clear exception (TypeError/ValueError/FloatingPoint
Error/RuntimeError naming the argument) or a documented result, "BAD" when it crashes with an
unrelated error, returns NaN/Inf silently or changes state. Prints the table (surface, cases, bad)
and the bad cases. Run: PYTHONPATH=src python benchmarks/attack.py (-v: every case)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attack_surfaces  # benchmarks/ is on the path
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
    _evals("layers", [f"L.{n}axis={a}).forward(X2)" for a in ("1.5", "'1'", None)
                      for n in ("BatchNorm(5, ", "GroupNorm(1, 5, ", "LayerNorm(5, ")])  # fmt: skip

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
    _evals("layers", ["L.Dense(5, 3, seed='x')", "L.Dense(5, 3, seed=1.5)"], match="seed")
    case("layers", "Dense init std 1e300",
         lambda: L.Dense(5, 3, init={"name": "normal", "std": 1e300}), match="float32")  # fmt: skip
    _evals("layers", ["L.AvgPool2D(0).forward(X)", "L.AvgPool2D(9).forward(X)",
                      "L.GroupNorm(2, 5).forward(X2)", "L.GroupNorm(0, 5)"])  # fmt: skip


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

    _evals("sequential", ["(lambda n: (n.predict(X2), n.predict(X2[:, :4])))(L.Sequential("
                          "[L.Dense(3), L.BatchNorm()]))", "L.Residual('abc')"])  # fmt: skip


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


def _evals(surface: str, texts: list[str], **kw: Any) -> None:
    """One case per expression (``L``, ``np``, ``X``, ``X2``, ``nan``, ``inf`` in scope)."""
    names = {"L": L, "np": np, "X": X, "X2": X2, "nan": np.nan, "inf": np.inf}
    for text in texts:
        case(surface, text, lambda t=text: eval(t, names), **kw)  # noqa: S307 - fixed strings


def new_layers(tmp: str) -> None:
    """GroupNorm/LayerNorm/AvgPool2D inputs, Residual and its shortcuts, lazy build/predict."""
    for b in ("GroupNorm(3, 3)", "LayerNorm(3)", "AvgPool2D(2)"):  # pooling passes NaN on
        _evals("new layers", [f"L.{b}.forward(X.astype(int))", f"L.{b}.forward(X[0, 0, 0])"]
               + ([] if "Pool" in b else [f"L.{b}.forward(X * nan)"]))  # fmt: skip
    conv = "L.Conv2D(3, {}, 3, stride={}, padding='same', seed=0)"
    _evals("new layers", [
        "L.GroupNorm(3, 3, eps=-1)", "L.GroupNorm(2, 4).forward(X)", "L.LayerNorm(0)",
        "L.AvgPool2D((2, 0))", "L.AvgPool2D(2, stride=0)", "L.Residual(L.Dense(3), 'x')",
        "L.AvgPool2D(True)", "L.AvgPool2D('2')", "L.AvgPool2D(2.5)", "L.AvgPool2D(2, 0)",
        "L.AvgPool2D(5).forward(X)", "L.AvgPool2D(2).forward(X2)", "L.Conv2D(3, 4, True)",
        "L.AvgPool2D(2).backward(np.ones((8, 2, 2, 3)))",
        "(lambda p: p.forward(X) + p.backward(np.ones((8, 3, 3, 3))))(L.AvgPool2D(2))",
        f"L.Residual([{conv.format(4, 1)}]).forward(X)",
        f"L.Residual([{conv.format(8, 2)}], L.ZeroPadShortcut(8, 1)).forward(X)",
        f"L.Residual([{conv.format(8, 2)}], L.ZeroPadShortcut(4, 2)).forward(X)",
        f"L.Residual([{conv.format(2, 2)}], L.ZeroPadShortcut(2, 2)).forward(X)",
        "L.ZeroPadShortcut(8, 2).forward(X2)", "L.ZeroPadShortcut(0)", "L.ZeroPadShortcut(True)",
        "L.ZeroPadShortcut(8, 2).backward(np.ones((8, 2, 2, 8)))", "L.Residual([])",
        "L.Residual([L.Dense(5, 5)], zero_init_last_gamma='yes')",
        "(lambda r: r.forward(X2) + r.backward(np.ones((16, 4))))(L.Residual([L.Dense(5, 5)]))",
        "L.Residual(L.Sequential([L.Dense(3, 4, seed=0)])).forward(X2[:, :3])",
        "L.Dense(4).build((16, 0))", "L.Dense(4).build((16, -5))", "L.Dense(4).build((16, 2.5))",
        "L.Conv2D(4, 3).build((2, 8, 8, 0))", "L.Dense(4).forward(X2[:, :0])",
        "L.Sequential([L.Dense(4), L.BatchNorm()]).predict(X2, batch_size=0)",
        "L.Sequential([L.Dense(4), L.BatchNorm()]).predict(X2, batch_size=-1)",
        "L.Sequential([L.Dense(4), L.BatchNorm()]).predict(X2, batch_size=2.0)",
        "L.Sequential([L.Dense(4), L.BatchNorm()]).predict(X2.astype(int))",
    ])  # fmt: skip
    _evals("new layers", [
        "L.AvgPool2D(2).forward(np.full((1, 2, 2, 1), 3e38, np.float32))",  # a finite mean
        "(lambda p: (p.forward(X), p.backward(X[:, :2, :2]))[1].dtype == np.float32 or 1 / 0)"
        "(L.AvgPool2D(2))",  # dx in dy's dtype
        "L.Sequential([L.Dense(4), L.BatchNorm()]).predict(X2)",  # lazy: built by predict
        "L.Sequential([L.Dense(4), L.BatchNorm()]).predict(X2, batch_size=10**18)",
        "L.Sequential([L.Dense(4), L.BatchNorm()]).predict(X2[:0])",
    ], expect_error=False)  # fmt: skip
    saves(tmp)


def saves(tmp: str) -> None:
    """bnlab.save/load on hostile paths: links, FIFOs, directories, a user's files."""
    net = L.Sequential([L.Dense(3, 2, seed=0)])
    mine = _write(tmp, "thesis.npz", b"my thesis")
    os.mkfifo(f"{tmp}/fifo.npz")
    for name, target in (("to-fifo", "fifo.npz"), ("to-thesis", "thesis.npz"),
                         ("to-dir", "."), ("dangling", "missing/x.npz")):  # fmt: skip
        os.symlink(f"{tmp}/{target}", f"{tmp}/{name}.npz")
    for name in ("thesis", "fifo", "to-fifo", "to-thesis", "to-dir", "dangling", "missing/x"):
        case("save/load paths", f"bnlab.save(model, {name}.npz)",
             lambda n=name: bnlab.save(net, f"{tmp}/{n}.npz"))  # fmt: skip
    for name in ("thesis", "fifo", "to-fifo", "to-dir", "dangling", "missing"):
        case("save/load paths", f"bnlab.load({name}.npz)",
             lambda n=name: bnlab.load(f"{tmp}/{n}.npz"))  # fmt: skip
    _evals("save/load paths", [f"open({mine!r}, 'rb').read() == b'my thesis' or 1 / 0"],
           expect_error=False)  # the user's file is intact  # fmt: skip
    case("save/load paths", "bnlab.load(text file)", lambda: bnlab.load(_write(tmp, "t.npz", b"x")))


def _write(tmp: str, name: str, data: bytes) -> str:
    Path(f"{tmp}/{name}").write_bytes(data)
    return f"{tmp}/{name}"


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
        "cifar10-resnet": [["--iterations", "0"], ["--batch-size", "0"], ["--lr", "inf"],
                           ["--momentum", "-0.5"], ["--weight-decay", "nan"], ["--norm", "x"],
                           ["--shortcut", "C"], ["--eval-batch-size", "-1"],
                           ["--train-subset", "-5"], ["--seed", "1.5"]],
        "batch-size": [["--batch-sizes", "0"], ["--batch-sizes", "1e99"], ["--norms", "bn,xx"],
                       ["--norms", ""], ["--epochs", "0"], ["--gn-groups", "0"],
                       ["--gn-groups", "3"], ["--lr", "-1"], ["--net", "vgg"],
                       ["--reference", "/nonexistent/ref.json"]],
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

            flag = args[0] if exp in ("cifar10-resnet", "batch-size") else ""
            case("cli new experiments", f"{exp} {' '.join(args)}", one, match=flag)


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


def _strict(fn: Callable[[], Any]) -> Any:
    """``fn()`` with NumPy's floating-point warnings raised as errors (a leak is "BAD")."""
    with np.errstate(all="warn"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            return fn()
        except RuntimeWarning as w:
            raise AssertionError(f"RuntimeWarning leaked: {w}") from None


def conv_algorithm(tmp: str) -> None:
    """Conv2D(algorithm=): bad values, NaN through both, overflow refused by both."""
    _evals("conv algorithm", [f"L.Conv2D(3, 4, 3, algorithm={b})" for b in
           ("'fast'", None, 3, "'WINOGRAD'", ["im2col"], True)])  # fmt: skip
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 8)).astype(np.float32)
    big, nan_x = x / np.abs(x).max() * np.float32(1e38), np.where(x > 1, np.nan, x)
    for alg in ("im2col", "winograd"):
        conv = L.Conv2D(8, 4, 3, padding="same", algorithm=alg, seed=0)
        case("conv algorithm", f"{alg}: NaN input passes through (as PyTorch)", lambda c=conv:
             _strict(lambda: np.isnan(c.forward(nan_x)).any() or 1 / 0),
             expect_error=False)  # fmt: skip
        case("conv algorithm", f"{alg}: forward 3e38 input", lambda c=conv:
             _strict(lambda: c.forward(np.full_like(x, 3e38))), match="overflowed")  # fmt: skip
        case("conv algorithm", f"{alg}: backward of a 1e38 input", lambda c=conv: _strict(
             lambda: c.forward(big) is c.backward(np.ones((2, 6, 6, 4), np.float32))),
             match="overflowed")  # fmt: skip
        net = L.Sequential([L.BatchNorm(8), L.Conv2D(8, 4, 3, algorithm=alg, seed=0)])
        net.layers[0].params["gamma"][...], net.layers[1].params["W"][...] = 5e37, 1.0
        case("conv algorithm", f"{alg}: overflow in a Sequential rolls BN back",
             lambda n=net: _rolled_back(n, x), match="overflowed")  # fmt: skip
    from bnlab.deploy.checkpoint import save_checkpoint

    for bad in ("bogus", 3, None):
        path = save_checkpoint(f"{tmp}/conv.npz", L.Sequential([L.Conv2D(3, 4, 3, seed=0)]))
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("__meta__")))
        meta["model_config"]["layers"][0]["config"]["algorithm"] = bad
        np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)
        case("conv algorithm", f"checkpoint algorithm={bad!r}",
             lambda p=path: bnlab.load(p), match="algorithm must be")  # fmt: skip


def _rolled_back(net: Any, x: np.ndarray) -> Any:
    before = net.layers[0].running_mean.copy()
    try:
        return net.forward(x)
    finally:
        if not np.array_equal(before, net.layers[0].running_mean):
            raise AssertionError("the BN before the failing layer kept the batch's statistics")


def group_layer_norms() -> None:
    """GroupNorm/LayerNorm arguments, shapes and dtypes."""
    _evals("group/layer norm", [f"L.{t}" for t in (
        "GroupNorm(0, 4)", "GroupNorm(-1, 4)", "GroupNorm(1.5, 4)", "GroupNorm('2', 4)",
        "GroupNorm(None, 4)", "GroupNorm(True, 4)", "GroupNorm(8, 4)", "GroupNorm(3, 4)",
        "GroupNorm(2, 4, eps=0)", "GroupNorm(2, 4, eps=-1e-5)", "GroupNorm(2, 4, eps=nan)",
        "GroupNorm(2, 4, eps=inf)", "GroupNorm(2, 4, eps='x')", "GroupNorm(2, 4, affine='no')",
        "LayerNorm(0)", "LayerNorm(-3)", "LayerNorm((4, 0))", "LayerNorm('4')", "LayerNorm(1.5)",
        "LayerNorm(4, eps=0)", "LayerNorm(4, eps=nan)", "LayerNorm(None)", "LayerNorm('12')",
        "LayerNorm(4, elementwise_affine='x')", "LayerNorm(4, bias=1)", "LayerNorm((4.7,))",
        "GroupNorm(2, 4.5)", "GroupNorm(2, '4')")])  # fmt: skip
    inputs = ["X4[..., :3]", "X4[0, 0, 0]", "np.float32(1)", "X4.astype(int)", "X4 > 0",
              "X4.astype(complex)", "X4.astype(object)", "np.full((2, 4), 'a')",
              "[['a'] * 4]"]  # fmt: skip
    for b in ("GroupNorm(2, 4)", "LayerNorm(4)", "GroupNorm(2)"):
        _evals("group/layer norm", [f"L.{b}.forward({v.replace('X4', 'X[..., :1].repeat(4, -1)')})"
                                    for v in inputs])  # fmt: skip
        _evals("group/layer norm", [f"L.{b}.forward(X[:0, ..., :1].repeat(4, -1))",  # empty batch
               f"L.{b}.forward(X[..., :1].repeat(4, -1) / 4 * np.float32(1e38))",  # float64 moments
               f"L.{b}.forward(X[..., :1].repeat(4, -1).astype(np.float16)).dtype == np.float16"
               " or 1 / 0"], expect_error=False)  # fmt: skip


def main() -> int:
    np.seterr(all="ignore")
    kernels()
    norm_layers()
    sequential()
    group_layer_norms()
    with tempfile.TemporaryDirectory() as tmp:
        conv_algorithm(tmp)
        interop(tmp)
        new_layers(tmp)
        run_files(tmp)
    with tempfile.TemporaryDirectory() as tmp:
        cli_runs(tmp)
        attack_surfaces.run(case, tmp)
    print(f"{'surface':12s} {'cases':>5s} {'bad':>4s}")
    for surface, rows in RESULTS.items():
        print(f"{surface:12s} {len(rows):5d} {sum(not ok for _, ok, _ in rows):4d}")
    bad = [(s, n, w) for s, rows in RESULTS.items() for n, ok, w in rows if not ok]
    print("".join(f"BAD {s}: {n}: {w}\n" for s, n, w in bad), end="")
    for s, n, ok, w in [(s, *r) for s, rows in RESULTS.items() for r in rows] * ("-v" in sys.argv):
        print(f"{'ok ' if ok else 'BAD'} {s}: {n}: {w}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
