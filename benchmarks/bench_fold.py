"""Inference speed-up of folding BN into the layer before it (bnlab.deploy.fold_batch_norm).

Eval-mode forward pass of the BN MLP (784-100-100-100-10, BN before each sigmoid) and of the
CIFAR-10 BN net (Keras' cifar10_cnn with BN after every Conv2D/Dense), each before and after
folding. Both variants run in this one process (no torch here), alternating unfolded/folded
for several rounds; each cell is the median over all timed calls. The speed-up is
unfolded / folded. The folded outputs are checked against the unfolded ones first.

    python benchmarks/bench_fold.py                 # Markdown section on stdout
    python benchmarks/bench_fold.py --reps 20 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

CASES = (("MLP 784-100x3-10 BN+sigmoid", "mlp", 60), ("MLP 784-100x3-10 BN+sigmoid", "mlp", 1000))
CASES += (("CIFAR-10 BN net", "cifar", 32), ("CIFAR-10 BN net", "cifar", 256))


def mlp() -> Any:
    from bnlab.layers import BatchNorm, Dense, Sequential, Sigmoid

    sizes = (784, 100, 100, 100, 10)
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(Dense(a, b, seed=i))
        if i < len(sizes) - 2:
            layers += [BatchNorm(b), Sigmoid()]
    return Sequential(layers)


def cifar() -> Any:
    from bnlab.experiments.cifar10_keras.config import Cifar10KerasConfig
    from bnlab.experiments.cifar10_keras.nets import build_model

    return build_model("bn", Cifar10KerasConfig.from_dict({"seed": 0, "bn_conv_bias": True}))


def prepared(kind: str, batch: int) -> tuple[Any, Any, np.ndarray]:
    """(model, folded model, input), the model's BN statistics set from a few random batches."""
    from bnlab.deploy import fold_batch_norm, recompute_population_stats

    rng = np.random.default_rng(0)
    shape = (784,) if kind == "mlp" else (32, 32, 3)
    model = mlp() if kind == "mlp" else cifar()
    recompute_population_stats(model, [rng.random((64, *shape), np.float32) for _ in range(2)])
    model.eval()
    folded = fold_batch_norm(model)
    x = rng.random((batch, *shape), np.float32)
    y, yf = model.forward(x), folded.forward(x)
    rel = float(np.max(np.abs(yf - y)) / np.max(np.abs(y)))
    assert rel < 1e-5, f"folded output differs by {rel:.2e} (relative)"
    return model, folded, x


def timed(f: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return out


def measure(kind: str, batch: int, reps: int, rounds: int) -> tuple[float, float]:
    """Median seconds per forward call: (unfolded, folded)."""
    model, folded, x = prepared(kind, batch)
    for m in (model, folded):
        timed(lambda m=m: m.forward(x), 3)  # warm-up: numba compilation, buffers
    plain: list[float] = []
    fast: list[float] = []
    for _ in range(rounds):
        plain += timed(lambda: model.forward(x), reps)
        fast += timed(lambda: folded.forward(x), reps)
    return statistics.median(plain), statistics.median(fast)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print("## Folding BN for inference (eval forward, float32)\n")
    print("| model | batch | unfolded (ms) | folded (ms) | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for title, kind, batch in CASES:
        reps = args.reps if kind == "mlp" or batch <= 32 else max(args.reps // 3, 3)
        plain, fast = measure(kind, batch, reps, args.rounds)
        print(f"| {title} | {batch} | {plain * 1e3:.3f} | {fast * 1e3:.3f} | {plain / fast:.2f}x |")
    print(
        "\nMedian of alternating rounds in one process; the machine is shared (2 cores), so "
        "timings are noisy."
    )


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()
