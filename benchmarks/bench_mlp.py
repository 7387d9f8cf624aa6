"""One training step of the 784-100-100-100-10 sigmoid MLP (batch 60), bnlab vs PyTorch CPU.

Issue 3, section 6 and issue 14: target <= 0.8x PyTorch's step time, with and without batch
normalization (BN between each hidden Dense and its sigmoid). A step is forward, softmax
cross-entropy, backward and a plain SGD update. Each side runs in a process of its own (their
OpenMP runtimes slow each other down in one process), alternating ours/torch several rounds;
the ratio is median(ours) / median(torch) (and best / best, less sensitive to other jobs on a
shared machine). Timing through benchmarks/harness.py.

bnlab's step is timed on three paths, which should run at the same speed:
``Sequential.forward/backward``, ``Trainer.step`` and a hand-written loop
``for L in layers: h = L.forward(h)`` (and back), as a user of a layer library may write it.
``--before SRC`` adds the same bnlab rows run with another ``src/`` directory first on
``PYTHONPATH`` (e.g. ``git archive 532441e src | tar -x -C /tmp/before`` gives
``/tmp/before/src``), alternating with the others, so that before and after are compared in
one run; ``--paths seq,loop`` times a subset of the paths.

    python benchmarks/bench_mlp.py [--threads 1] [--reps 300 --rounds 3] [--before SRC]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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

BATCH, SIZES, LR = 60, (784, 100, 100, 100, 10), 0.1
PATHS = {"seq": "Sequential", "trainer": "Trainer", "loop": "hand-written loop"}
TARGET = 0.8


def ours_model(bn: bool) -> Any:
    """The MLP as a bnlab ``Sequential`` (Dense, [BatchNorm,] Sigmoid per hidden layer)."""
    from bnlab.layers import BatchNorm, Dense, Sequential, Sigmoid

    layers: list = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        layers.append(Dense(a, b, seed=i))
        if i < len(SIZES) - 2:
            layers.extend([BatchNorm(b)] if bn else [])
            layers.append(Sigmoid())
    return Sequential(layers)


def ours_step(bn: bool, path: str = "seq") -> Callable[[], None]:
    """One bnlab step through ``path``: "seq", "trainer" or "loop" (see the module doc)."""
    import numpy as np

    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import SGD

    model = ours_model(bn)
    opt = SGD(model.params, model.grads, lr=LR)
    loss_fn = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    return training_step(model, loss_fn, opt, x, y, path)  # type: ignore[no-any-return]


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


def compare(reps: int, rounds: int, before: str | None, paths: list[str]) -> str:
    """Every bnlab path (and ``before``'s, if given) and torch, alternating; a Markdown table."""
    variants = {"no BN": False, "with BN": True}
    ours = [
        Job(f"{v} {p}", "bench_mlp:ours_step", {"bn": bn, "path": p}, reps, 3, 20.0)
        for v, bn in variants.items()
        for p in paths
    ]
    torch = [
        Job(v, "bench_mlp:torch_step", {"bn": bn}, reps, 3, 20.0) for v, bn in variants.items()
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
            for p in paths:
                t = times[group, f"{v} {p}"]
                rows.append([
                    v, PATHS[p] + (" (before)" if group == "before" else ""), fmt_time(median(t)),
                    fmt_time(min(t)), fmt_time(median(theirs)), ratio(median(t), median(theirs)),
                    ratio(min(t), min(theirs)), f"<= {TARGET}x",
                ])  # fmt: skip
    header = ["variant", "bnlab path", "bnlab median", "bnlab best", "torch median", "ratio",
              "ratio (best)", "target"]  # fmt: skip
    note = (
        f"{len(times['torch', 'no BN'])} timed torch steps per variant over {rounds} alternating "
        f"rounds (groups: {', '.join(groups)}), each in a fresh process. On a shared machine "
        "the best-step ratio is the steadier one."
    )
    return f"{markdown_table(header, rows)}\n\n{note}"


def main() -> None:
    title = f"Training step: MLP {'-'.join(map(str, SIZES))} sigmoid, batch {BATCH}"
    ap = argparse.ArgumentParser(description=title)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads per side (default: all)")
    ap.add_argument("--before", default=None, help="another bnlab src/ to time alongside")
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated: seq,trainer,loop")
    args = ap.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        ap.error(f"--paths: unknown {unknown}; choose from {sorted(PATHS)}")
    if args.threads:  # the harness's worker processes inherit this environment
        os.environ.update({var: str(args.threads) for var in THREAD_VARS})
    print(f"## {title}\n")
    print(compare(args.reps, args.rounds, args.before, paths))


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()
