"""Where the Keras cifar10_cnn training step (batch 32) spends its time, per layer and per pass.

Issue 14, "profile first". The nets are benchmarks/bench_cnn.py's (with and without BN, RMSprop,
dropout in the no-BN net). One process per variant; every leaf layer's ``forward`` and
``backward`` is wrapped with a timer, and inside each Conv2D the im2col, matrix products and
col2im calls are timed too, or with Winograd its data transforms (".transform"), its weight
transforms G W G^T and G^T dU G (".weights") and its stacks of 16 products (".gemm"); the rest
of a Conv2D's time is its bias, checks, reshapes and allocations.
``faults`` counts minor page faults (``getrusage``): freshly allocated large arrays that are
touched for the first time, the cost of allocating instead of reusing buffers.

The step's achieved GFLOP/s counts every matrix product of the step (2 m k n each) over the
uninstrumented step's median time; beside it NumPy's sgemm at 1024^3 and at this net's own
product shapes (same transposes), measured in the same process, and the "GEMM floor": the
step's products at those measured rates.

    python benchmarks/profile_cnn.py [--steps 20] [--path seq|loop] [--bn both|yes|no]
                                     [--eval-batch 256] [--clock wall|cpu]

``--clock cpu`` (with ``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1``) times the thread's CPU
time instead of wall time: on a busy machine the wall time of a layer includes whatever
preemption falls into it, the CPU time does not.

``--path seq`` runs the layers through ``Sequential.forward/backward`` (the model's own thread
policy); ``--path loop`` calls ``layer.forward``/``layer.backward`` in a plain loop, as a user
of a layer library may write it. ``--path eval`` / ``--path folded`` profile inference
instead: the forward pass of the net in eval mode (or after ``fold_batch_norm``) on a batch of
256 images (``--eval-batch N``: N; 1 for the latency), as benchmarks/bench_inference.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

_now = time.perf_counter  # --clock cpu: time.thread_time (this thread's CPU time)


class _Clock:
    """Accumulates (seconds, page faults) per label for the current step."""

    def __init__(self) -> None:
        self.step: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.steps: list[dict[str, list[float]]] = []
        self.stack: list[str] = []
        self.gemms: list[tuple[tuple[int, ...], tuple[int, ...], bool, bool]] = []
        self.record_gemms = False

    def timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            full = f"{self.stack[-1]} {label}" if self.stack and label[0] == "." else label
            self.stack.append(full)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = _now()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = _now() - t0
                df = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
                self.stack.pop()
                cell = self.step[full]
                cell[0] += dt
                cell[1] += df

        return wrapper

    def end_step(self) -> None:
        self.steps.append(dict(self.step))
        self.step = defaultdict(lambda: [0.0, 0.0])


class _TimedNumpy:
    """Stands in for ``numpy`` inside bnlab.layers.conv2d and bnlab.kernels.winograd:
    ``matmul`` is timed and recorded (2-D products and Winograd's stacks of 16)."""

    def __init__(self, clock: _Clock) -> None:
        import numpy as np

        self._np = np
        self._clock = clock
        self.matmul = clock.timed(".gemm", self._matmul)

    def _matmul(self, a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
        if self._clock.record_gemms and a.ndim == b.ndim and a.ndim in (2, 3):
            ta, tb = a.strides[-1] != a.itemsize, b.strides[-1] != b.itemsize  # transposed views
            self._clock.gemms.append((a.shape, b.shape, ta, tb))
        return self._np.matmul(a, b, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._np, name)


def _layers_of(model: Any) -> list[Any]:
    return list(model.layers)


def _instrument(model: Any, clock: _Clock) -> None:
    import bnlab.kernels.winograd as wino_mod
    import bnlab.kernels.winograd_weights as weights_mod
    import bnlab.layers.conv2d as conv_mod
    import bnlab.layers.dense as dense_mod

    wino_mod.np = _TimedNumpy(clock)  # type: ignore[assignment]
    wino_mod.call_on_policy = clock.timed(".transform", wino_mod.call_on_policy)
    weights_mod.winograd_weights = clock.timed(".weights", weights_mod.winograd_weights)
    wino_mod.winograd_weights_grad = clock.timed(".weights", wino_mod.winograd_weights_grad)
    conv_mod.im2col = clock.timed(".im2col", conv_mod.im2col)
    conv_mod.col2im = clock.timed(".col2im", conv_mod.col2im)
    conv_mod.np = _TimedNumpy(clock)  # type: ignore[assignment]
    dense_mod.np = _TimedNumpy(clock)  # type: ignore[assignment]
    for i, layer in enumerate(_layers_of(model)):
        name = f"{i:02d} {layer.describe() if hasattr(layer, 'describe') else type(layer).__name__}"
        layer.forward = clock.timed(f"{name} fwd", layer.forward)
        layer.backward = clock.timed(f"{name} bwd", layer.backward)


def _eval_fn(
    bn: bool, path: str, clock: _Clock | None, batch: int
) -> tuple[Callable[[], None], Any]:
    """Inference: the BN net in eval mode ("eval") or folded ("folded"), ``batch`` images."""
    import numpy as np
    from bench_cnn import ours_model

    from bnlab.deploy import fold_batch_norm

    model = ours_model(bn).eval()
    if path == "folded":
        model = fold_batch_norm(model)
    x = np.random.default_rng(0).random((batch, 32, 32, 3), dtype=np.float32)
    if clock is not None:
        _instrument(model, clock)
    return (lambda: None if model.forward(x) is None else None), model


EVAL_BATCH = 256


def _step_fn(
    bn: bool, path: str, clock: _Clock | None, batch: int = EVAL_BATCH
) -> tuple[Callable[[], None], Any]:
    import numpy as np
    from bench_cnn import BATCH, ours_model

    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import RMSprop

    if path in ("eval", "folded"):
        return _eval_fn(bn, path, clock, batch)
    model = ours_model(bn)
    opt = RMSprop(model.params, model.grads, lr=1e-3 if bn else 1e-4, decay=1e-6)
    loss_fn = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    if clock is not None:
        _instrument(model, clock)
        loss_fn = clock.timed("loss", loss_fn)  # type: ignore[assignment]
        opt.step = clock.timed("optimizer", opt.step)  # type: ignore[method-assign]
    return training_step(model, loss_fn, opt, x, y, path), model


def _flip(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (*shape[:-2], shape[-1], shape[-2])


def _sgemm_rate(ashape: tuple[int, ...], bshape: tuple[int, ...], ta: bool, tb: bool) -> float:
    """Best-of GFLOP/s of np.matmul for these operand shapes (2-D, or stacks of products) and
    transposes (float32)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random(_flip(ashape) if ta else ashape, dtype=np.float32)
    b = rng.random(_flip(bshape) if tb else bshape, dtype=np.float32)
    a, b = (a.swapaxes(-1, -2) if ta else a), (b.swapaxes(-1, -2) if tb else b)
    out = np.empty((*ashape[:-1], bshape[-1]), np.float32)
    flops = _flops(json.dumps([ashape, bshape, ta, tb]))
    reps = max(3, min(200, int(2e9 / flops)))
    np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def worker(bn: bool, path: str, steps: int, batch: int = EVAL_BATCH) -> dict[str, Any]:
    plain, _ = _step_fn(bn, path, None, batch)
    for _ in range(3):
        plain()
    plain_times = []
    for _ in range(steps):
        t = _now()
        plain()
        plain_times.append(_now() - t)
    clock = _Clock()
    step, _ = _step_fn(bn, path, clock, batch)
    clock.record_gemms = True
    step()
    clock.record_gemms = False
    clock.steps.clear()
    clock.step.clear()
    step()
    clock.step.clear()
    totals = []
    for _ in range(steps):
        t = _now()
        step()
        totals.append(_now() - t)
        clock.end_step()
    # every region seen in any step (a region timed on a chunk thread can nest under another
    # thread's, or be missed in a step): a step without it counts 0
    labels = list(dict.fromkeys(k for s in clock.steps for k in s))
    med, zero = statistics.median, (0.0, 0)
    rows = {
        k: [
            med(s.get(k, zero)[0] for s in clock.steps),
            med(s.get(k, zero)[1] for s in clock.steps),
        ]
        for k in labels
    }
    gemms = clock.gemms
    rates = {}  # best of two rounds: a shared machine's noise only ever slows a product down
    for g in sorted(set(gemms)) * 2:
        rates[json.dumps(g)] = max(rates.get(json.dumps(g), 0.0), _sgemm_rate(*g))
    big = max(_sgemm_rate((1024, 1024), (1024, 1024), False, False) for _ in range(2))
    return {
        "plain_median": statistics.median(plain_times),
        "plain_best": min(plain_times),
        "instr_median": statistics.median(totals),
        "rows": rows,
        "gemms": [json.dumps(g) for g in gemms],
        "rates": rates,
        "sgemm_1024": big,
    }


def _flops(g: str) -> float:
    a, b, _, _ = json.loads(g)
    stack = a[0] if len(a) == 3 else 1
    return 2.0 * stack * a[-2] * a[-1] * b[-1]


def report(bn: bool, path: str, res: dict[str, Any], batch: int = EVAL_BATCH) -> str:
    rows, total = res["rows"], res["instr_median"]
    lines = [
        f"### cifar10_cnn {'forward' if path in ('eval', 'folded') else 'step'}, "
        f"batch {batch if path in ('eval', 'folded') else 32}, "
        f"{'with' if bn else 'without'} BN, path={path}",
        "",
        f"uninstrumented step: median {res['plain_median'] * 1e3:.3f} ms, best "
        f"{res['plain_best'] * 1e3:.3f} ms; instrumented: median {total * 1e3:.3f} ms",
        "",
        "| region | median ms | % of step | page faults |",
        "|---|---|---|---|",
    ]
    by_kind: dict[str, float] = defaultdict(float)
    for label, (t, faults) in rows.items():
        parts = label.split()
        inner = sum(v[0] for k, v in rows.items() if k.startswith(label + " ."))
        if parts[-1].startswith("."):  # "03 Conv2D(...) bwd .gemm" -> "Conv2D bwd gemm"
            kind = f"{parts[1].split('(')[0]} {parts[-2]} {parts[-1][1:]}"
        elif parts[0].isdigit():  # a layer's own time, outside the timed calls inside it
            kind = f"{parts[1].split('(')[0]} {parts[-1]}" + (" (rest)" if inner else "")
        else:
            kind = label
        by_kind[kind] += t - inner
        lines.append(f"| {label} | {t * 1e3:.3f} | {100 * t / total:.1f} | {faults:.0f} |")
    lines += ["", "By kind ('rest': a layer's time outside its timed calls inside):", ""]
    lines += ["| kind | ms | % of step |", "|---|---|---|"]
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {t * 1e3:.3f} | {100 * t / total:.1f} |")
    flops = sum(_flops(g) for g in res["gemms"])
    floor = sum(_flops(g) / (res["rates"][g] * 1e9) for g in res["gemms"])
    gemm_t = sum(t for k, (t, _) in rows.items() if k.endswith(".gemm"))
    lines += [
        "",
        f"GEMM work: {flops / 1e9:.2f} GFLOP in {len(res['gemms'])} products; step achieves "
        f"{flops / res['plain_median'] / 1e9:.1f} GFLOP/s (median step), "
        f"{flops / res['plain_best'] / 1e9:.1f} (best step); the products alone run at "
        f"{flops / gemm_t / 1e9:.1f} GFLOP/s inside the step.",
        f"NumPy sgemm in this process: {res['sgemm_1024']:.1f} GFLOP/s at 1024^3; at the "
        f"net's shapes the products would take {floor * 1e3:.1f} ms (the GEMM floor), i.e. "
        f"{flops / floor / 1e9:.1f} GFLOP/s; step / floor = {res['plain_median'] / floor:.2f}.",
        "",
        "| GEMM (a @ b, T = transposed view) | calls | GFLOP | sgemm GFLOP/s |",
        "|---|---|---|---|",
    ]
    for g, rate in sorted(res["rates"].items(), key=lambda kv: -_flops(kv[0])):
        a, b, ta, tb = json.loads(g)
        shape = f"{tuple(a)}{'T' if ta else ''} @ {tuple(b)}{'T' if tb else ''}"
        lines.append(f"| {shape} | {res['gemms'].count(g)} | {_flops(g) / 1e9:.3f} | {rate:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--path", choices=("seq", "loop", "eval", "folded"), default="seq")
    ap.add_argument("--bn", choices=("both", "yes", "no"), default="both")
    ap.add_argument("--eval-batch", type=int, default=EVAL_BATCH, help="images (eval, folded)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.clock == "cpu" and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        ap.error(
            "--clock cpu counts the calling thread only: set OPENBLAS_NUM_THREADS=1 "
            "(and NUMBA_NUM_THREADS=1)"
        )
    if args.worker is not None:
        global _now
        _now = time.thread_time if args.clock == "cpu" else time.perf_counter
        print(json.dumps(worker(args.worker == "yes", args.path, args.steps, args.eval_batch)))
        return
    for bn in ("no", "yes") if args.bn == "both" else (args.bn,):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", bn, "--path", args.path,
             "--steps", str(args.steps), "--eval-batch", str(args.eval_batch),
             "--clock", args.clock],
            capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        print(report(bn == "yes", args.path, res, args.eval_batch) + "\n")


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()
