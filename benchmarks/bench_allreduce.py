"""Allreduce and allgather times for the messages one data-parallel step sends (issue 13, sec. 5).

    mpiexec -n 2 .venv/bin/python benchmarks/bench_allreduce.py [--reps 100] [--json FILE]
    # the same over libfabric's TCP provider on the loopback instead of shared memory:
    MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp mpiexec -n 2 ...

Messages, per rank and step (bnlab.train.DataParallel and bnlab.layers.sync_batchnorm):

* the gradient allreduce: one flat buffer of every gradient plus the loss, in the model's
  dtype (float32), for the MNIST BN MLP (784-100-100-100-10) and the CIFAR-10 BN net of
  ``cifar10-keras``;
* per SyncBatchNorm layer with C channels: the forward allgather of (2C+1) float64 (count,
  means, variances) and the backward allreduce of 2C float64 (sum dy, sum dy*xhat);
* a sweep of sizes 8 B .. 16 MB (powers of 4) for the alpha-beta model t(m) = alpha + m / bw
  (alpha: the 8-byte time; bw: the slope between the two largest sizes).

Each call is timed between barriers; a call's time is the slowest rank's; the table gives the
median over ``reps`` calls after ``warmup``. Uses ``bnlab.comm`` (the path training takes).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np


def step_messages() -> list[tuple[str, str, int, Any]]:
    """``(label, op, count, dtype)`` of every message kind one step sends."""
    from bnlab.experiments.cifar10_keras.config import Cifar10KerasConfig
    from bnlab.experiments.cifar10_keras.nets import build_model
    from bnlab.experiments.mnist.nets import build_net

    mnist = build_net(True, 0, hidden=[100, 100, 100], init_std=0.1)
    cifar = build_model("bn", Cifar10KerasConfig.from_dict())
    out = []
    for name, model in (("MNIST BN MLP", mnist), ("CIFAR-10 BN net", cifar)):
        n = sum(g.size for g in model.grads.values()) + 1
        out.append((f"{name}: gradients + loss", "allreduce", n, np.float32))
    for c in (32, 64, 100, 512):
        out.append((f"SyncBN C={c}: forward moments", "allgather", 2 * c + 1, np.float64))
        out.append((f"SyncBN C={c}: backward sums", "allreduce", 2 * c, np.float64))
    return out


def time_op(comm: Any, op: str, count: int, dtype: Any, reps: int, warmup: int) -> float:
    """Median over ``reps`` calls of the slowest rank's time for one collective."""
    buf = np.ones(count, dtype)
    recv = np.empty((comm.size, count), dtype)
    times = np.empty(reps)
    for i in range(warmup + reps):
        comm.barrier()
        t0 = time.perf_counter()
        if op == "allreduce":
            comm.allreduce(buf)
        else:
            comm.allgather(buf, recv)
        if i >= warmup:
            times[i - warmup] = time.perf_counter() - t0
        if op == "allreduce":
            buf[...] = 1  # keep the values finite
    slowest = np.stack(comm.allgather_object(times)).max(axis=0)
    return float(np.median(slowest))


def fit_alpha_beta(sizes: list[int], times: list[float]) -> tuple[float, float]:
    """``t(m) = alpha + m / bw``: alpha is the time of the smallest message, bw the slope
    between the two largest (a least-squares fit would let the large messages set alpha)."""
    slope = (times[-1] - times[-2]) / (sizes[-1] - sizes[-2])
    return float(times[0]), float(1.0 / slope) if slope > 0 else float("inf")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args()
    from bnlab.comm import world

    comm = world()
    rows = []
    for label, op, count, dtype in step_messages():
        nbytes = count * np.dtype(dtype).itemsize
        t = time_op(comm, op, count, dtype, args.reps, args.warmup)
        rows.append({"message": label, "op": op, "bytes": nbytes, "seconds": t})
    sweep = []
    for k in range(0, 12):
        count = 4**k  # float64: 8 B .. 32 MB
        if count * 8 > 16 * 2**20:
            break
        reps = args.reps if count * 8 <= 2**20 else max(10, args.reps // 10)
        t = time_op(comm, "allreduce", count, np.float64, reps, min(args.warmup, reps))
        sweep.append({"bytes": count * 8, "seconds": t})
    alpha, bw = fit_alpha_beta([s["bytes"] for s in sweep], [s["seconds"] for s in sweep])
    if not comm.is_root:
        return
    print(f"world size {comm.size}; median of the slowest rank over {args.reps} calls\n")
    print("| message | op | bytes per rank | time |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['message']} | {r['op']} | {r['bytes']:,} | {r['seconds'] * 1e6:.1f} us |")
    print("\n| allreduce bytes | time | effective GB/s |\n|---:|---:|---:|")
    for s in sweep:
        gbs = s["bytes"] / s["seconds"] / 1e9
        print(f"| {s['bytes']:,} | {s['seconds'] * 1e6:.1f} us | {gbs:.2f} |")
    print(f"\nalpha-beta: alpha = {alpha * 1e6:.1f} us, bw = {bw / 1e9:.2f} GB/s")
    if args.json:
        out = {"world": comm.size, "messages": rows, "sweep": sweep, "alpha_s": alpha, "bw": bw}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
    from harness import print_provenance

    from bnlab.comm import world

    if world().rank == 0:
        print_provenance(world().size)
