"""One training step of the 784-100-100-100-10 sigmoid MLP (batch 60), bnlab vs PyTorch CPU.

Issue 3, section 6: target <= 0.8x PyTorch's step time, with and without batch normalization
(BN between each hidden Dense and its sigmoid). A step is forward, softmax cross-entropy,
backward and a plain SGD update. Each side runs in a process of its own (their OpenMP
runtimes slow each other down in one process), alternating ours/torch several rounds; the
ratio is median(ours) / median(torch) (and best / best, less sensitive to other jobs on a
shared machine). Timing through benchmarks/harness.py.

    python benchmarks/bench_mlp.py [--threads 1] [--reps 300 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Job, alternate, fmt_time, markdown_table, median, ratio  # noqa: E402

BATCH, SIZES, LR = 60, (784, 100, 100, 100, 10), 0.1


def ours_step(bn: bool) -> Callable[[], None]:
    import numpy as np

    from bnlab.layers import Dense, Sequential, Sigmoid
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD

    layers: list = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        layers.append(Dense(a, b, seed=i))
        if i < len(SIZES) - 2:
            if bn:
                from bnlab.layers import BatchNorm

                layers.append(BatchNorm(b))
            layers.append(Sigmoid())
    model = Sequential(layers)
    opt = SGD(model.params, model.grads, lr=LR)
    loss_fn = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)

    def step() -> None:
        _, dlogits = loss_fn(model.forward(x), y)
        model.backward(dlogits, need_input_grad=False)
        opt.step()

    return step


def torch_step(bn: bool) -> Callable[[], None]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        mods.append(nn.Linear(a, b))
        if i < len(SIZES) - 2:
            mods += [nn.BatchNorm1d(b)] if bn else []
            mods.append(nn.Sigmoid())
    model = nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(BATCH, SIZES[0])
    y = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def compare(
    module: str, title: str, target: float, reps: int, rounds: int, threads: int | None
) -> str:
    """Time ``module``'s ours_step/torch_step (bn False/True) alternately; a Markdown section."""
    if threads:  # the harness's worker processes inherit this environment
        os.environ.update({var: str(threads) for var in THREAD_VARS})
    variants = {"no BN": {"bn": False}, "with BN": {"bn": True}}
    groups = {
        side: [
            Job(name, f"{module}:{side}_step", kw, reps=reps, warmup=3, max_seconds=20.0)
            for name, kw in variants.items()
        ]
        for side in ("ours", "torch")
    }
    times = alternate(groups, rounds=rounds)
    rows = []
    for name in variants:
        ours, theirs = times["ours", name], times["torch", name]
        rows.append([
            name, fmt_time(median(ours)), fmt_time(median(theirs)),
            ratio(median(ours), median(theirs)), ratio(min(ours), min(theirs)), f"<= {target}x",
        ])  # fmt: skip
    header = ["variant", "bnlab median", "torch median", "ratio", "ratio (best)", "target"]
    note = (
        f"{len(times['ours', 'no BN'])} timed steps per cell over {rounds} alternating rounds, "
        f"{threads or os.cpu_count()} thread(s) per side. On a shared machine the best-step "
        "ratio is the steadier one."
    )
    return f"## {title}\n\n{markdown_table(header, rows)}\n\n{note}"


def cli(module: str, title: str, target: float, reps: int) -> None:
    ap = argparse.ArgumentParser(description=title)
    ap.add_argument("--reps", type=int, default=reps)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads per side (default: all)")
    args = ap.parse_args()
    print(compare(module, title, target, args.reps, args.rounds, args.threads))


if __name__ == "__main__":
    cli(
        "bench_mlp",
        f"Training step: MLP {'-'.join(map(str, SIZES))} sigmoid, batch {BATCH}",
        0.8,
        300,
    )
