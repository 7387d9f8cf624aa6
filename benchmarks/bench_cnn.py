"""One training step of Keras' cifar10_cnn net (batch 32), bnlab vs PyTorch CPU.

Issue 4, section 1: target <= 1.5x PyTorch's step time, with and without batch normalization.
The net: Conv32 3x3 same, ReLU, Conv32 3x3 valid, ReLU, MaxPool 2, Dropout 0.25, Conv64 same,
ReLU, Conv64 valid, ReLU, MaxPool 2, Dropout 0.25, Flatten, Dense 512, ReLU, Dropout 0.5,
Dense 10; the BN variant puts BN after each Conv2D and the Dense 512 (before the ReLU) and
drops the dropout, as the post. A step is forward, softmax cross-entropy, backward and an
RMSprop update (lr 1e-4, or 1e-3 with BN; decay 1e-6). Timing as benchmarks/bench_mlp.py
(benchmarks/harness.py: separate processes, alternating ours/torch).

    python benchmarks/bench_cnn.py [--threads 1] [--reps 20 --rounds 3] [--before SRC]

Issue 14: bnlab's step is timed on three paths, which should run at the same speed (the thread
policy belongs to ``bnlab.runtime``, not to a container): ``Sequential.forward/backward``,
``Trainer.step`` and a hand-written loop ``for L in layers: h = L.forward(h)`` (and back), as a
user of a layer library may write it. ``--before SRC`` adds the same bnlab rows run with
another ``src/`` directory first on ``PYTHONPATH`` (e.g. a ``git archive`` of the previous
revision), alternating with the others, so that before and after are compared in one run.

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

    block(Conv2D(3, 32, 3, padding="same", seed=1), 32)
    block(Conv2D(32, 32, 3, seed=2), 32)
    layers += [MaxPool2D(2)] + ([] if bn else [Dropout(0.25, seed=0)])
    block(Conv2D(32, 64, 3, padding="same", seed=3), 64)
    block(Conv2D(64, 64, 3, seed=4), 64)
    layers += [MaxPool2D(2)] + ([] if bn else [Dropout(0.25, seed=1)])
    layers += [Flatten()]
    block(Dense(2304, 512, seed=5), 512)
    layers += ([] if bn else [Dropout(0.5, seed=2)]) + [Dense(512, 10, seed=6)]
    setting = os.environ.get("BENCH_KERNEL_THREADS", "none")
    threads = None if setting == "none" else int(setting)
    return Sequential(layers, kernel_threads=threads)


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


def compare(reps: int, rounds: int, before: str | None) -> str:
    """Every bnlab path (and ``before``'s, if given) and torch, alternating; a Markdown table."""
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
    groups["torch"] = torch
    times = alternate(groups, rounds)
    rows = []
    for v in variants:
        theirs = times["torch", v]
        for group in [g for g in groups if g != "torch"]:
            for p, label in PATHS.items():
                t = times[group, f"{v} {p}"]
                rows.append([
                    v, label + (" (before)" if group == "before" else ""), fmt_time(median(t)),
                    fmt_time(min(t)), fmt_time(median(theirs)), ratio(median(t), median(theirs)),
                    ratio(min(t), min(theirs)),
                ])  # fmt: skip
    header = ["variant", "bnlab path", "bnlab median", "bnlab best", "torch median", "ratio",
              "ratio (best)"]  # fmt: skip
    note = (
        f"{len(times['torch', 'no BN'])} timed torch steps per variant over {rounds} alternating "
        f"rounds (groups: {', '.join(groups)}), each in a fresh process; target <= 0.8x."
    )
    return f"{markdown_table(header, rows)}\n\n{note}"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=f"Training step: Keras cifar10_cnn, batch {BATCH}")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads per side (default: all)")
    ap.add_argument("--before", default=None, help="another bnlab src/ to time alongside")
    args = ap.parse_args()
    if args.threads:
        os.environ.update({var: str(args.threads) for var in THREAD_VARS})
    print(f"## Training step: Keras cifar10_cnn, batch {BATCH}\n")
    print(compare(args.reps, args.rounds, args.before))
