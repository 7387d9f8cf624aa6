"""Batch norm forward + backward as a user's script calls them: each side's five shapes in ONE
fresh process, in order, no ``out=``, no warm heap (issue 25).

bnlab: ``y, cache = batch_norm_forward(x, gamma, beta)``, ``batch_norm_backward(dy, cache)``
(NHWC); torch: ``F.batch_norm(..., training=True)`` and ``y.backward(dy)`` (NCHW, autograd).
Each side runs in a process of its own, alternating (ours, torch, ours, torch, ...); a cell
is the median over the rounds of each process's median of ``--reps`` timed calls, after
``--warmup`` untimed ones. Ratios below 1 are faster than PyTorch. The inputs are drawn in
float64 and cast, as the README's tour does: freeing that temporary raises glibc's malloc
thresholds, which spares torch's outputs fresh pages (its faster case: at (256, 1024) 220 us
against 290 us in a script that freed no large temporary). bnlab fixes the thresholds when its
kernels are imported (``bnlab.runtime.configure_allocator``), so its side does not depend on it.
``--cold`` draws the inputs in float32 instead (a script that freed no large temporary).
``--layer`` times the layers instead: ``BatchNorm(C)`` (``y = bn.forward(x)``,
``bn.backward(dy)``) against ``nn.BatchNorm2d``/``nn.BatchNorm1d`` in training mode
(``bn(x).backward(dy)``), both updating their running statistics.
``--before SRC`` adds the bnlab side of another source tree (``PYTHONPATH=SRC``, e.g. ``git
archive REV src | tar -x -C /tmp/before`` gives ``/tmp/before/src``) to the alternation, with
its ratios.

    python benchmarks/bench_bn_user.py --rounds 3 [--cold] [--layer] [--before /tmp/before/src]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = [(256, 1024), (60, 100), (32, 32, 32, 32), (32, 16, 16, 64), (64, 28, 28, 256)]


def _make_step(side: str, x, dy, layer: bool = False):  # type: ignore[no-untyped-def]
    """One forward + backward of ``side`` on NHWC/dense ``x`` (torch gets NCHW copies): the
    functions, or with ``layer`` the layers."""
    import numpy as np

    c = x.shape[-1]
    if side == "torch":
        import torch
        import torch.nn.functional as F

        perm = (0, 3, 1, 2) if x.ndim == 4 else (0, 1)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(perm))).requires_grad_()
        dyt = torch.from_numpy(np.ascontiguousarray(dy.transpose(perm)))
        w, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
        module = (torch.nn.BatchNorm2d if x.ndim == 4 else torch.nn.BatchNorm1d)(c).train()

        def torch_step() -> None:
            F.batch_norm(xt, None, None, w, b, training=True).backward(dyt)

        def torch_layer_step() -> None:
            module(xt).backward(dyt)

        return torch_layer_step if layer else torch_step
    if layer:
        from bnlab.layers import BatchNorm

        bn = BatchNorm(c)

        def ours_layer_step() -> None:
            bn.forward(x)
            bn.backward(dy)

        return ours_layer_step
    from bnlab.kernels import batch_norm_backward, batch_norm_forward

    g, bt = np.ones(c, np.float32), np.zeros(c, np.float32)

    def ours_step() -> None:
        y, cache = batch_norm_forward(x, g, bt)
        batch_norm_backward(dy, cache)

    return ours_step


def _child(side: str, reps: int, warmup: int, cold: bool, layer: bool) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for shape in SHAPES:
        if cold:  # drawn in float32, no large temporary freed (glibc's thresholds stay low)
            x = rng.standard_normal(shape, dtype=np.float32)
            x *= 2.0
            x += 1.0
            dy = rng.standard_normal(shape, dtype=np.float32)
        else:
            x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
            dy = rng.normal(size=shape).astype(np.float32)
        step = _make_step(side, x, dy, layer)
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
    p.add_argument("--before", default=None, help="another bnlab src/ to time alongside")
    p.add_argument("--cold", action="store_true", help="inputs drawn in float32 (see the doc)")
    p.add_argument("--layer", action="store_true", help="the BatchNorm layers (see the doc)")
    p.add_argument("--child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child, a.reps, a.warmup, a.cold, a.layer)
        return
    envs = {"ours": dict(os.environ), "torch": dict(os.environ)}
    if a.before:
        path = os.pathsep.join([os.path.abspath(a.before), os.environ.get("PYTHONPATH", "")])
        envs = {"ours": envs["ours"], "before": {**os.environ, "PYTHONPATH": path}, **envs}
    res: dict[str, list[dict[str, float]]] = {side: [] for side in envs}
    for _ in range(a.rounds):
        for side, env in envs.items():
            child = "torch" if side == "torch" else "ours"
            cmd = [sys.executable, __file__, "--child", child, "--reps", str(a.reps)]
            cmd += ["--warmup", str(a.warmup)] + (["--cold"] if a.cold else [])
            cmd += ["--layer"] if a.layer else []
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            res[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
    sides = [s for s in envs if s != "torch"]
    cols = " | ".join(f"{s} / torch" for s in sides)
    print(f"| shape | {' | '.join(envs)} | {cols} |\n|{'---|' * (1 + len(envs) + len(sides))}")
    for shape in SHAPES:
        t = {s: sorted(r[str(shape)] for r in res[s])[a.rounds // 2] for s in envs}
        cells = " | ".join(f"{t[s] * 1e6:.0f} us" for s in envs)
        ratios = " | ".join(f"{t[s] / t['torch']:.2f}x" for s in sides)
        print(f"| {shape} | {cells} | {ratios} |")


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()
