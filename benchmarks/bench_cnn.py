"""One training step of Keras' cifar10_cnn net (batch 32), bnlab vs PyTorch CPU.

Issue 4, section 1: target <= 1.5x PyTorch's step time, with and without batch normalization.
The net: Conv32 3x3 same, ReLU, Conv32 3x3 valid, ReLU, MaxPool 2, Dropout 0.25, Conv64 same,
ReLU, Conv64 valid, ReLU, MaxPool 2, Dropout 0.25, Flatten, Dense 512, ReLU, Dropout 0.5,
Dense 10; the BN variant puts BN after each Conv2D and the Dense 512 (before the ReLU) and
drops the dropout, as the post. A step is forward, softmax cross-entropy, backward and an
RMSprop update (lr 1e-4, or 1e-3 with BN; decay 1e-6). Timing as benchmarks/bench_mlp.py
(benchmarks/harness.py: separate processes, alternating ours/torch).

    python benchmarks/bench_cnn.py [--threads 1] [--reps 20 --rounds 3] [--before SRC] [--im2col]

Issue 14: bnlab's step is timed on three paths, which should run at the same speed (the thread
policy belongs to ``bnlab.runtime``, not to a container): ``Sequential.forward/backward``,
``Trainer.step`` and a hand-written loop ``for L in layers: h = L.forward(h)`` (and back), as a
user of a layer library may write it. ``--before SRC`` adds the same bnlab rows run with
another ``src/`` directory first on ``PYTHONPATH`` (e.g. a ``git archive`` of the previous
revision), alternating with the others, so that before and after are compared in one run.

Issue 25: each row also gives the step's effective GFLOP/s (the FLOPs of the step as direct
convolution and dense products count them, ``STEP_GFLOP``, divided by the best time), beside
NumPy's sgemm GFLOP/s measured in the same run (1024^3, and conv2's im2col product), in fresh
processes of their own. ``BENCH_CONV_ALGORITHM`` (unset: Conv2D's default, "auto"), if set,
is passed to every Conv2D ("im2col" times the step without Winograd); ``--im2col`` adds those
rows to the same run, alternating with the others.

``BENCH_KERNEL_THREADS=N`` runs every kernel of the step on N threads
(``Sequential(kernel_threads=N)``, an explicit override of the runtime's thread policy), to
measure what the policy is worth. The default (``none``) applies the runtime's policy.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mlp import THREAD_VARS  # noqa: E402
from harness import (  # noqa: E402
    Job,
    alternate,
    before_env,
    fmt_time,
    markdown_table,
    median,
    print_provenance,
    ratio,
    training_step,
)

BATCH = 32


def ours_model(bn: bool):  # noqa: ANN201
    from bnlab.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential

    layers: list = []

    def block(layer, width: int, drop: float | None = None) -> None:  # noqa: ANN001
        layers.append(layer)
        layers.extend([BatchNorm(width)] if bn else [])
        layers.append(ReLU())

    chosen = os.environ.get("BENCH_CONV_ALGORITHM")  # unset: a --before tree may predate it
    algo = {"algorithm": chosen} if chosen else {}
    block(Conv2D(3, 32, 3, padding="same", seed=1, **algo), 32)
    block(Conv2D(32, 32, 3, seed=2, **algo), 32)
    layers += [MaxPool2D(2)] + ([] if bn else [Dropout(0.25, seed=0)])
    block(Conv2D(32, 64, 3, padding="same", seed=3, **algo), 64)
    block(Conv2D(64, 64, 3, seed=4, **algo), 64)
    layers += [MaxPool2D(2)] + ([] if bn else [Dropout(0.25, seed=1)])
    layers += [Flatten()]
    block(Dense(2304, 512, seed=5), 512)
    layers += ([] if bn else [Dropout(0.5, seed=2)]) + [Dense(512, 10, seed=6)]
    setting = os.environ.get("BENCH_KERNEL_THREADS", "none")
    threads = None if setting == "none" else int(setting)
    return Sequential(layers, kernel_threads=threads)


def step_gflop() -> float:
    """FLOPs of one training step counted as direct convolution and dense products (2 per
    multiply-add): forward, dW and dx of every layer but the first's dx; bias, BN, ReLU,
    pooling and the optimizer are not counted."""
    convs = [(32, 32, 3, 32), (30, 30, 32, 32), (15, 15, 32, 64), (13, 13, 64, 64)]  # Ho, Wo
    denses = [(2304, 512), (512, 10)]
    fwd = [2.0 * BATCH * ho * wo * 9 * cin * cout for ho, wo, cin, cout in convs]
    fwd += [2.0 * BATCH * din * dout for din, dout in denses]
    return (3 * sum(fwd) - fwd[0]) / 1e9


STEP_GFLOP = step_gflop()
SGEMM = {"sgemm 1024^3": (1024, 1024, 1024), "sgemm conv2 im2col": (28800, 288, 32)}


def sgemm(m: int, k: int, n: int) -> Callable[[], None]:
    """One float32 product (m, k) @ (k, n) into a reused output, as a timed step."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)

    def step() -> None:
        np.matmul(a, b, out=out)

    return step


def gflops_note(times: dict[tuple[str, str], list[float]]) -> str:
    """The sgemm rates measured in this run, one line."""
    rates = []
    for name, (m, k, n) in SGEMM.items():
        rates.append(f"{name} {2e-9 * m * k * n / min(times['sgemm', name]):.0f} GFLOP/s")
    return f"Step: {STEP_GFLOP:.2f} GFLOP (direct convolution + dense). NumPy " + ", ".join(rates)


PATHS = {"seq": "Sequential", "trainer": "Trainer", "loop": "hand-written loop"}


def ours_step(bn: bool, path: str = "seq") -> Callable[[], None]:
    """One bnlab step through ``path``: "seq", "trainer" or "loop" (see the module doc)."""
    import numpy as np

    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import RMSprop

    model = ours_model(bn)
    opt = RMSprop(model.params, model.grads, lr=1e-3 if bn else 1e-4, decay=1e-6)
    loss_fn = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    return training_step(model, loss_fn, opt, x, y, path)  # type: ignore[no-any-return]


def torch_step(bn: bool) -> Callable[[], None]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    mods: list[nn.Module] = []

    def block(layer: nn.Module, width: int, norm: type[nn.Module]) -> None:
        mods.append(layer)
        mods.extend([norm(width)] if bn else [])
        mods.append(nn.ReLU())

    block(nn.Conv2d(3, 32, 3, padding=1), 32, nn.BatchNorm2d)
    block(nn.Conv2d(32, 32, 3), 32, nn.BatchNorm2d)
    mods += [nn.MaxPool2d(2)] + ([] if bn else [nn.Dropout(0.25)])
    block(nn.Conv2d(32, 64, 3, padding=1), 64, nn.BatchNorm2d)
    block(nn.Conv2d(64, 64, 3), 64, nn.BatchNorm2d)
    mods += [nn.MaxPool2d(2)] + ([] if bn else [nn.Dropout(0.25)]) + [nn.Flatten()]
    block(nn.Linear(2304, 512), 512, nn.BatchNorm1d)
    mods += ([] if bn else [nn.Dropout(0.5)]) + [nn.Linear(512, 10)]
    model = nn.Sequential(*mods)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3 if bn else 1e-4, alpha=0.9, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(BATCH, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def compare(reps: int, rounds: int, before: str | None, im2col: bool = False) -> str:
    """Every bnlab path (and ``before``'s, and im2col-only, if asked) and torch, alternating;
    a Markdown table."""
    variants = {"no BN": False, "with BN": True}
    ours = [
        Job(f"{v} {p}", "bench_cnn:ours_step", {"bn": bn, "path": p}, reps, 3, 20.0)
        for v, bn in variants.items()
        for p in PATHS
    ]
    torch = [
        Job(v, "bench_cnn:torch_step", {"bn": bn}, reps, 3, 20.0) for v, bn in variants.items()
    ]
    groups: dict[str, Any] = {"ours": ours}
    if before:
        groups["before"] = (ours, before_env(before))
    if im2col:
        groups["im2col"] = (ours, {"BENCH_CONV_ALGORITHM": "im2col"})
    groups["torch"] = torch
    groups["sgemm"] = [
        Job(name, "bench_cnn:sgemm", dict(zip("mkn", shape, strict=True)), reps, 3, 5.0)
        for name, shape in SGEMM.items()
    ]
    times = alternate(groups, rounds)
    rows = []
    for v in variants:
        theirs = times["torch", v]
        for group in [g for g in groups if g not in ("torch", "sgemm")]:
            for p, label in PATHS.items():
                t = times[group, f"{v} {p}"]
                rows.append([
                    v, label + ("" if group == "ours" else f" ({group})"), fmt_time(median(t)),
                    fmt_time(min(t)), fmt_time(median(theirs)), ratio(median(t), median(theirs)),
                    ratio(min(t), min(theirs)), f"{STEP_GFLOP / min(t):.0f}",
                    f"{STEP_GFLOP / min(theirs):.0f}",
                ])  # fmt: skip
    header = ["variant", "bnlab path", "bnlab median", "bnlab best", "torch median", "ratio",
              "ratio (best)", "bnlab GFLOP/s", "torch GFLOP/s"]  # fmt: skip
    note = (
        f"{len(times['torch', 'no BN'])} timed torch steps per variant over {rounds} alternating "
        f"rounds (groups: {', '.join(groups)}), each in a fresh process; target <= 0.8x. "
        f"GFLOP/s: step FLOPs / best time. {gflops_note(times)}."
    )
    return f"{markdown_table(header, rows)}\n\n{note}"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=f"Training step: Keras cifar10_cnn, batch {BATCH}")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads per side (default: all)")
    ap.add_argument("--before", default=None, help="another bnlab src/ to time alongside")
    ap.add_argument("--im2col", action="store_true", help="also time every Conv2D on im2col")
    args = ap.parse_args()
    if args.threads:
        os.environ.update({var: str(args.threads) for var in THREAD_VARS})
    print(f"## Training step: Keras cifar10_cnn, batch {BATCH}\n")
    print(compare(args.reps, args.rounds, args.before, args.im2col))
    print_provenance()
