"""Where the sigmoid MLP's training step (784-100-100-100-10, batch 60, SGD) spends its time.

Issue 14, "profile first", for the MLP target (benchmarks/bench_mlp.py's nets and step). At
these sizes a step is a few hundred microseconds and mostly per-call Python overhead, so the
table separates, per layer and per pass, the numerical work ("gemm": Dense's ``np.matmul``;
"kernel": the activation and batch-norm array functions) from the rest of the call (argument,
shape and finiteness checks, temporaries, dispatch). ``loss`` is SoftmaxCrossEntropy,
``optimizer`` is ``SGD.step``, ``Sequential (own)`` is the time of ``Sequential.forward`` /
``backward`` outside its layers (snapshot of the buffers, the thread-policy block, copies).
The timer's own cost per wrapped call is measured and subtracted from every region that
contains wrapped calls, so the columns add up to the uninstrumented step, within the noise.

One process per variant. "floor" times the same arithmetic as bare NumPy calls into
preallocated arrays (the no-BN net only: 4 matmul+bias, 3 sigmoid, loss, 3 sigmoid-backward
and 7 matmul backward, 8 in-place SGD updates), the cost of the step without any layer
machinery.

    python benchmarks/profile_mlp.py [--steps 300] [--path seq|loop|trainer] [--bn both|yes|no]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import training_step  # noqa: E402


class _Clock:
    """Accumulates seconds (and the number of wrapped calls inside) per label for one step."""

    def __init__(self) -> None:
        self.step: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.steps: list[dict[str, list[float]]] = []
        self.stack: list[str] = []

    def timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        perf = time.perf_counter

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            full = f"{self.stack[-1]} {label}" if self.stack and label[0] == "." else label
            self.stack.append(full)
            t0 = perf()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = perf() - t0
                self.stack.pop()
                cell = self.step[full]
                cell[0] += dt
                cell[1] += 1

        return wrapper

    def end_step(self) -> None:
        self.steps.append(dict(self.step))
        self.step = defaultdict(lambda: [0.0, 0.0])


def _wrapper_cost() -> float:
    """Seconds a :meth:`_Clock.timed` wrapper adds to a call (median of many)."""
    clock = _Clock()
    f = clock.timed("noop", lambda: None)
    samples = []
    for _ in range(200):
        t = time.perf_counter()
        for _ in range(100):
            f()
        samples.append((time.perf_counter() - t) / 100)
    g = lambda: None  # noqa: E731
    bare = []
    for _ in range(200):
        t = time.perf_counter()
        for _ in range(100):
            g()
        bare.append((time.perf_counter() - t) / 100)
    return statistics.median(samples) - statistics.median(bare)


class _TimedNumpy:
    """Stands in for ``numpy`` inside bnlab.layers.dense: ``matmul`` is timed as ".gemm"."""

    def __init__(self, clock: _Clock) -> None:
        import numpy as np

        self._np = np
        self.matmul = clock.timed(".gemm", np.matmul)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._np, name)


#: module -> names of the array functions its layers call (patched if present)
KERNELS = {
    "bnlab.layers._normalization": (
        "chunk_moments", "chunk_normalize", "chunk_grad_sums", "chunk_grad_input",
        "batch_norm_forward_into", "batch_norm_backward_into",
    ),
}  # fmt: skip


def _instrument(model: Any, clock: _Clock, loss_fn: Any, opt: Any, path: str) -> Any:
    import importlib

    import bnlab.layers.activations as act
    import bnlab.layers.dense as dense_mod

    dense_mod.np = _TimedNumpy(clock)  # type: ignore[assignment]
    for cls in (act.Sigmoid, act.ReLU):
        if "_fwd" in cls.__dict__:
            cls._fwd = clock.timed(".kernel", cls.__dict__["_fwd"])  # type: ignore[assignment]
            cls._bwd = clock.timed(".kernel", cls.__dict__["_bwd"])  # type: ignore[assignment]
    for module, names in KERNELS.items():
        mod = importlib.import_module(module)
        for name in names:
            if hasattr(mod, name):
                setattr(mod, name, clock.timed(".kernel", getattr(mod, name)))
    for i, layer in enumerate(model.layers):
        name = f"{i:02d} {layer.describe()}"
        layer.forward = clock.timed(f"{name} fwd", layer.forward)
        layer.backward = clock.timed(f"{name} bwd", layer.backward)
    if path != "loop":
        model.forward = clock.timed("Sequential fwd", model.forward)
        model.backward = clock.timed("Sequential bwd", model.backward)
    opt.step = clock.timed("optimizer", opt.step)
    return clock.timed("loss", loss_fn)


def _step_fn(bn: bool, path: str, clock: _Clock | None) -> Callable[[], Any]:
    import numpy as np
    from bench_mlp import BATCH, LR, SIZES, ours_model

    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD

    model = ours_model(bn)
    opt = SGD(model.params, model.grads, lr=LR)
    loss_fn: Any = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    if clock is not None:
        loss_fn = _instrument(model, clock, loss_fn, opt, path)
    return training_step(model, loss_fn, opt, x, y, path)  # type: ignore[no-any-return]


def _floor_fn() -> Callable[[], None]:
    """The no-BN step's arithmetic as bare NumPy calls into preallocated arrays."""
    import numpy as np
    from bench_mlp import BATCH, SIZES

    rng = np.random.default_rng(0)
    x = rng.random((BATCH, SIZES[0]), dtype=np.float32)
    lab = rng.integers(0, 10, BATCH)
    Ws = [
        rng.random((a, b), dtype=np.float32) * 0.01 for a, b in zip(SIZES, SIZES[1:], strict=False)
    ]
    bs = [np.zeros(b, np.float32) for b in SIZES[1:]]
    hs = [np.empty((BATCH, b), np.float32) for b in SIZES[1:]]
    dWs, dbs = [np.empty_like(W) for W in Ws], [np.empty_like(b) for b in bs]
    ds = [np.empty((BATCH, b), np.float32) for b in SIZES[1:]]
    rows = np.arange(BATCH)

    def step() -> None:
        h = x
        for i, (W, b, out) in enumerate(zip(Ws, bs, hs, strict=True)):
            np.matmul(h, W, out=out)
            out += b
            if i < len(Ws) - 1:
                np.negative(out, out=out)
                np.exp(out, out=out)
                out += 1
                np.reciprocal(out, out=out)
            h = out
        z = h - h.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        z[rows, lab] -= 1
        z /= BATCH
        d = z
        for i in range(len(Ws) - 1, -1, -1):
            a = hs[i - 1] if i else x
            np.matmul(a.T, d, out=dWs[i])
            np.sum(d, axis=0, out=dbs[i])
            if i:
                np.matmul(d, Ws[i].T, out=ds[i - 1])
                d = ds[i - 1]
                d *= a
                d *= 1 - a
        for W, dW, b, db in zip(Ws, dWs, bs, dbs, strict=True):
            W -= 0.1 * dW
            b -= 0.1 * db

    return step


def _median_time(fn: Callable[[], Any], steps: int) -> tuple[float, float]:
    for _ in range(5):
        fn()
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


def worker(bn: bool, path: str, steps: int) -> dict[str, Any]:
    plain_median, plain_best = _median_time(_step_fn(bn, path, None), steps)
    floor = _median_time(_floor_fn(), steps) if not bn else (float("nan"),) * 2
    clock = _Clock()
    step = _step_fn(bn, path, clock)
    for _ in range(5):
        step()
    clock.step.clear()
    totals = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        totals.append(time.perf_counter() - t)
        clock.end_step()
    med = statistics.median
    rows = {k: [med(s[k][0] for s in clock.steps), clock.steps[0][k][1]] for k in clock.steps[0]}
    return {
        "plain_median": plain_median,
        "plain_best": plain_best,
        "floor_median": floor[0],
        "floor_best": floor[1],
        "instr_median": med(totals),
        "wrapper_s": _wrapper_cost(),
        "rows": rows,
    }


def _own_time(label: str, rows: dict[str, list[float]], wrap: float) -> float:
    """A region's time outside the wrapped regions directly inside it (and their timers)."""
    t = rows[label][0]
    if label == "Sequential fwd":
        inner = [k for k in rows if k.endswith(" fwd") and k[:2].isdigit() and " ." not in k]
    elif label == "Sequential bwd":
        inner = [k for k in rows if k.endswith(" bwd") and k[:2].isdigit() and " ." not in k]
    else:
        inner = [k for k in rows if k.startswith(label + " .")]
    for k in inner:
        t -= rows[k][0] + wrap * rows[k][1]
    return t


def report(bn: bool, path: str, res: dict[str, Any]) -> str:
    rows, wrap = res["rows"], res["wrapper_s"]
    plain = res["plain_median"]
    us = 1e6
    lines = [
        f"### MLP step, batch 60, {'with' if bn else 'without'} BN, path={path}",
        "",
        f"uninstrumented step: median {plain * us:.0f} us, best {res['plain_best'] * us:.0f} us;"
        f" instrumented: median {res['instr_median'] * us:.0f} us (timer cost "
        f"{wrap * us:.2f} us per wrapped call, subtracted below)",
    ]
    if not bn:
        lines.append(
            f"bare-NumPy floor of the same arithmetic: median {res['floor_median'] * us:.0f} us,"
            f" best {res['floor_best'] * us:.0f} us"
        )
    lines += ["", "| region | calls | median us | own us (outside timed calls inside) |"]
    lines += ["|---|---|---|---|"]
    by_kind: dict[str, float] = defaultdict(float)
    for label, (t, calls) in rows.items():
        own = _own_time(label, rows, wrap)
        parts = label.split()
        if parts[-1].startswith("."):  # "03 Dense(100->100) bwd .gemm" -> "Dense bwd gemm"
            kind = f"{parts[1].split('(')[0]} {parts[-2]} {parts[-1][1:]}"
        elif parts[0].isdigit():
            kind = f"{parts[1].split('(')[0]} {parts[-1]} (rest)"
        elif parts[0] == "Sequential":
            kind = f"{label} (own)"
        else:
            kind = label
        by_kind[kind] += own
        lines.append(f"| {label} | {calls:.0f} | {t * us:.1f} | {own * us:.1f} |")
    accounted = sum(by_kind.values())
    lines += ["", "By kind ('rest': a layer's time outside its timed GEMM/kernel calls):", ""]
    lines += ["| kind | us per step | % of step |", "|---|---|---|"]
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {t * us:.1f} | {100 * t / plain:.1f} |")
    lines.append(
        f"| (step outside these, incl. timers) | {(res['instr_median'] - accounted) * us:.1f} | "
        f"{100 * (res['instr_median'] - accounted) / plain:.1f} |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--path", choices=("seq", "loop", "trainer"), default="seq")
    ap.add_argument("--bn", choices=("both", "yes", "no"), default="both")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker == "yes", args.path, args.steps)))
        return
    for bn in ("no", "yes") if args.bn == "both" else (args.bn,):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", bn, "--path", args.path,
             "--steps", str(args.steps)],
            capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        print(report(bn == "yes", args.path, res) + "\n")
        if args.json:
            print(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()
