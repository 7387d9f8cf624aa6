"""Per-layer micro-benchmark: Conv2D with algorithm="winograd" against "im2col", one process.

The four convolutions of Keras' cifar10_cnn at batch 32 (float32), each timed as the layer is
called in a training step: ``forward``, ``backward(need_input_grad=False)`` (dW and db only,
as the first layer's) and ``backward`` (dx too); "dx" is printed as the difference. The two
algorithms alternate round after round in the same process and each figure is the minimum
over ``--rounds`` x ``--reps`` calls, so that a shared, noisy machine distorts both alike.
``--chunk-mb`` times Winograd with several chunk sizes (``winograd.CHUNK_BYTES``);
``--threads 1 --clock cpu`` times the calling thread's CPU time, which a busy machine disturbs
far less than wall time (the work each algorithm does, not the use of both cores).

    python benchmarks/bench_winograd.py [--rounds 10 --reps 5] [--threads 1 [--clock cpu]]
        [--chunk-mb 0.5,1,2]

Measured 2026-12-07 on the 2-core development machine under heavy load from other processes
(load average 10-15, so wall time was useless: ``--threads 1 --clock cpu``, 6 rounds x 5
reps), ms, im2col / winograd:

    layer                      forward       dW            dx            total
    conv1 32x32 3->32 same     1.34 / 1.80   0.93 / 2.03   1.60 / 1.26   3.88 / 5.09
    conv2 32x32 32->32 valid  11.31 / 4.31   9.41 / 4.66   8.99 / 4.67  29.72 / 13.64
    conv3 15x15 32->64 same    4.07 / 2.13   3.76 / 2.23   3.81 / 2.14  11.64 / 6.50
    conv4 15x15 64->64 valid   6.26 / 3.10   5.40 / 3.75   5.64 / 3.55  17.29 / 10.40

(Winograd's "dx" is the extra cost of dx once dW's transforms are done.) Chunks of 0.25-4 MiB
measured within noise of each other; whole-batch V and M (16 MiB for conv2) were several times
slower (4K-aliased strided stores): ``CHUNK_BYTES`` is 2 MiB.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

LAYERS = [  # (name, H, cin, cout, padding) at batch 32
    ("conv1 32x32 3->32 same", 32, 3, 32, "same"),
    ("conv2 32x32 32->32 valid", 32, 32, 32, "valid"),
    ("conv3 15x15 32->64 same", 15, 32, 64, "same"),
    ("conv4 15x15 64->64 valid", 15, 64, 64, "valid"),
]


CLOCK = [time.perf_counter]


def best_of(fn: Callable[[], object], reps: int) -> float:
    """The shortest of ``reps`` calls on ``CLOCK[0]``, in ms."""
    times = []
    for _ in range(reps):
        t0 = CLOCK[0]()
        fn()
        times.append(CLOCK[0]() - t0)
    return 1e3 * min(times)


def time_layer(layer: Any, x: Any, dy: Any, reps: int) -> dict[str, float]:
    """Best forward, dW-only backward and full backward times of ``layer``, in ms."""
    return {
        "fwd": best_of(lambda: layer.forward(x), reps),
        "dW": best_of(lambda: layer.backward(dy, need_input_grad=False), reps),
        "dW+dx": best_of(lambda: layer.backward(dy), reps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="BLAS and Numba threads")
    ap.add_argument("--chunk-mb", default="", help="comma list of Winograd chunk sizes, MiB")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the calling thread's CPU time (with --threads 1: robust to a loaded machine)",
    )
    args = ap.parse_args()
    if args.clock == "cpu":
        if args.threads != 1:
            ap.error("--clock cpu counts the calling thread only: use it with --threads 1")
        CLOCK[0] = time.thread_time
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    import numpy as np

    from bnlab.kernels import winograd
    from bnlab.layers import Conv2D

    chunks = [float(c) for c in args.chunk_mb.split(",") if c] or [None]
    rng = np.random.default_rng(0)
    print(
        f"batch {args.batch}, float32, threads {args.threads or 'default'}, {args.clock} clock, "
        f"min over {args.rounds} rounds x {args.reps} reps, ms"
    )
    for name, h, cin, cout, padding in LAYERS:
        x = rng.standard_normal((args.batch, h, h, cin)).astype(np.float32)
        variants: dict[str, tuple[Conv2D, float | None]] = {
            "im2col": (Conv2D(cin, cout, 3, padding=padding, algorithm="im2col", seed=0), None)
        }
        for mb in chunks:
            label = "winograd" if mb is None else f"winograd@{mb:g}MiB"
            variants[label] = (Conv2D(cin, cout, 3, padding=padding, algorithm="winograd"), mb)
        dy = rng.standard_normal(variants["im2col"][0].output_shape(x.shape)).astype(np.float32)
        res: dict[str, dict[str, float]] = {k: {} for k in variants}
        default_chunk = winograd.CHUNK_BYTES
        for _ in range(args.rounds):
            for label, (layer, mb) in variants.items():
                winograd.CHUNK_BYTES = default_chunk if mb is None else int(mb * 2**20)
                layer.params["W"][...] = variants["im2col"][0].params["W"]
                for k, v in time_layer(layer, x, dy, args.reps).items():
                    res[label][k] = min(v, res[label].get(k, float("inf")))
        winograd.CHUNK_BYTES = default_chunk
        print(name)
        for label, r in res.items():
            total = r["fwd"] + r["dW+dx"]
            print(
                f"  {label:18s} fwd {r['fwd']:6.2f}  dW {r['dW']:6.2f}  "
                f"dx {r['dW+dx'] - r['dW']:6.2f}  fwd+dW+dx {total:6.2f}"
            )


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()
