"""Batch norm forward + backward as a user's script calls them: each side's five shapes in ONE
fresh process, in order, no ``out=``, no warm heap (issue 25).

bnlab: ``y, cache = batch_norm_forward(x, gamma, beta)``, ``batch_norm_backward(dy, cache)``
(NHWC); torch: ``F.batch_norm(..., training=True)`` and ``y.backward(dy)`` (NCHW, autograd).
Each side runs in a process of its own, alternating (ours, torch, ours, torch, ...); a cell
is the median over the rounds of each process's median of ``--reps`` timed calls, after
``--warmup`` untimed ones. Ratios below 1 are faster than PyTorch.

    python benchmarks/bench_bn_user.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = [(256, 1024), (60, 100), (32, 32, 32, 32), (32, 16, 16, 64), (64, 28, 28, 256)]


def _make_step(side: str, x, dy):  # type: ignore[no-untyped-def]
    """One forward + backward of ``side`` on NHWC/dense ``x`` (torch gets NCHW copies)."""
    import numpy as np

    c = x.shape[-1]
    if side == "torch":
        import torch
        import torch.nn.functional as F

        perm = (0, 3, 1, 2) if x.ndim == 4 else (0, 1)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(perm))).requires_grad_()
        dyt = torch.from_numpy(np.ascontiguousarray(dy.transpose(perm)))
        w, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)

        def torch_step() -> None:
            F.batch_norm(xt, None, None, w, b, training=True).backward(dyt)

        return torch_step
    from bnlab.kernels import batch_norm_backward, batch_norm_forward

    g, bt = np.ones(c, np.float32), np.zeros(c, np.float32)

    def ours_step() -> None:
        y, cache = batch_norm_forward(x, g, bt)
        batch_norm_backward(dy, cache)

    return ours_step


def _child(side: str, reps: int, warmup: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for shape in SHAPES:
        x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
        dy = rng.normal(size=shape).astype(np.float32)
        step = _make_step(side, x, dy)
        for _ in range(warmup):
            step()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        times.sort()
        out[str(shape)] = times[len(times) // 2]
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child, a.reps, a.warmup)
        return
    res: dict[str, list[dict[str, float]]] = {"ours": [], "torch": []}
    for _ in range(a.rounds):
        for side in ("ours", "torch"):
            cmd = [sys.executable, __file__, "--child", side, "--reps", str(a.reps)]
            cmd += ["--warmup", str(a.warmup)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, check=True)
            res[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| shape | bnlab | torch | bnlab / torch |\n|---|---|---|---|")
    for shape in SHAPES:
        k = str(shape)
        ours = sorted(r[k] for r in res["ours"])[a.rounds // 2]
        torch = sorted(r[k] for r in res["torch"])[a.rounds // 2]
        print(f"| {shape} | {ours * 1e6:.0f} us | {torch * 1e6:.0f} us | {ours / torch:.2f}x |")


if __name__ == "__main__":
    main()
