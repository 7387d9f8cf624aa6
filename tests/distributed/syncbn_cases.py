"""SyncBN test cases shared by the in-process (threads) tests and the MPI worker script.

A case is a global float64 batch split into contiguous shards in rank order. Each rank runs
two training steps (forward + backward) of a synchronized layer on its shard; the gathered
results (y and dx concatenated in rank order, dgamma/dbeta summed over ranks, the running
statistics of every rank) must equal one process running the plain layer on the whole batch.

Tolerance: 1e-12 relative for centred data. With a mean of 1e6 and std 1, any float64 mean
carries a rounding error of ~1e-10 (ulp(1e6) = 1.2e-10), which y, dx, dgamma and the variance
inherit relative to their O(1) size, in the one-process result as much as in the merged one;
those quantities get 1e-9 there. A single allreduce of (n, sum x, sum x^2) misses that by
orders of magnitude (the tests show it); the running mean keeps 1e-12.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.layers import BatchNorm, BatchRenorm, SyncBatchNorm, SyncBatchRenorm

STEPS = 2
QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "num_batches_tracked")


def cases_for(world_size: int) -> list[dict[str, Any]]:
    """Every (split, layer, input layout, offset) combination for this world size, plus ghosts."""
    splits = {2: [[4, 4], [3, 5], [1, 6]], 4: [[2, 2, 2, 2], [4, 0, 7, 2]]}[world_size]
    out = []
    for split in splits:
        for kind in ("bn", "renorm"):
            for tail in ((), (3, 2)):
                for offset in (0.0, 1e6):
                    out.append({"split": split, "kind": kind, "tail": tail, "offset": offset})
    ghosts = {
        2: [([3, 5], "bn", 3), ([1, 6], "bn", 3), ([3, 5], "renorm", 2), ([4, 4], "renorm", 4)],
        4: [([4, 0, 7, 2], "bn", 5), ([2, 2, 2, 2], "renorm", 4), ([4, 0, 7, 2], "bn", 4)],
    }[world_size]
    for split, kind, k in ghosts:
        tail = (2, 2) if sum(split) % k == 1 else ()  # a last chunk of 1 row needs H*W > 1
        out.append({"split": split, "kind": kind, "tail": tail, "offset": 0.0, "vbs": k})
    out.append({"split": splits[-1], "kind": "bn", "tail": (), "offset": 0.0, "momentum": None})
    for i, case in enumerate(out):
        case["seed"] = 1000 * world_size + i
        case["name"] = (
            f"{case['kind']}-{'x'.join(map(str, case['split']))}-"
            f"{'conv' if case['tail'] else 'dense'}-off{case['offset']:g}"
            f"{'-vbs' + str(case['vbs']) if case.get('vbs') else ''}"
            f"{'-cumulative' if 'momentum' in case else ''}"
        )
    return out


C = 4


def make_data(case: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """STEPS global batches (x, dy), float64, (N, *tail, C) channels-last."""
    rng = np.random.default_rng(case["seed"])
    shape = (sum(case["split"]), *case["tail"], C)
    scale = rng.uniform(0.5, 2.0, size=C)
    xs = [case["offset"] + scale * rng.normal(size=shape) for _ in range(STEPS)]
    dys = [rng.normal(size=shape) for _ in range(STEPS)]
    return xs, dys


def make_layer(case: dict[str, Any], comm: Any = None) -> Any:
    """The plain layer (comm None) or its Sync twin, float64, with non-trivial state."""
    rng = np.random.default_rng(case["seed"] + 7)
    kw: dict[str, Any] = {"virtual_batch_size": case.get("vbs")}
    if case["kind"] == "bn":
        kw["momentum"] = case.get("momentum", 0.3)
        cls = BatchNorm if comm is None else SyncBatchNorm
    else:  # rmax and dmax active from the first step, moving statistics off the batch's
        kw.update(momentum=0.2, rmax=1.5, dmax=0.5, warmup_steps=0, rmax_steps=0, dmax_steps=0)
        cls = BatchRenorm if comm is None else SyncBatchRenorm
    layer = cls(C, **kw) if comm is None else cls(C, comm=comm, **kw)
    layer.astype(np.float64)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, size=C)
    layer.params["beta"][...] = rng.normal(size=C)
    layer.buffers["running_mean"][...] = case["offset"] + rng.normal(size=C)
    layer.buffers["running_var"][...] = rng.uniform(0.1, 5.0, size=C)
    return layer


def run_steps(layer: Any, xs: list[np.ndarray], dys: list[np.ndarray]) -> dict[str, Any]:
    """y, dx, dgamma, dbeta of every step and the final buffers."""
    out: dict[str, Any] = {k: [] for k in ("y", "dx", "dgamma", "dbeta")}
    for x, dy in zip(xs, dys, strict=True):
        out["y"].append(layer.forward(x))
        out["dx"].append(layer.backward(dy))
        out["dgamma"].append(layer.grads["gamma"].copy())
        out["dbeta"].append(layer.grads["beta"].copy())
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        out[key] = np.array(layer.buffers[key], copy=True)
    return out


def shard(case: dict[str, Any], rank: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
    lo = sum(case["split"][:rank])
    hi = lo + case["split"][rank]
    return [a[lo:hi] for a in arrays]


def rank_results(case: dict[str, Any], comm: Any) -> dict[str, Any]:
    """This rank's results for ``case`` (shard of the global batch, synchronized layer)."""
    xs, dys = make_data(case)
    layer = make_layer(case, comm)
    return run_steps(layer, shard(case, comm.rank, xs), shard(case, comm.rank, dys))


def reference(case: dict[str, Any]) -> dict[str, Any]:
    """One process, the plain layer, the whole batch."""
    xs, dys = make_data(case)
    return run_steps(make_layer(case), xs, dys)


def combine(per_rank: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """y/dx concatenated in rank order, grads summed; buffers of rank 0, and whether every
    rank's buffers are bit-identical."""
    out: dict[str, Any] = {}
    for key in ("y", "dx"):
        out[key] = [np.concatenate([r[key][s] for r in per_rank]) for s in range(STEPS)]
    for key in ("dgamma", "dbeta"):
        out[key] = [np.sum([r[key][s] for r in per_rank], axis=0) for s in range(STEPS)]
    same = True
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        out[key] = per_rank[0][key]
        same &= all(r[key].tobytes() == out[key].tobytes() for r in per_rank)
    return out, same


def tolerance(case: dict[str, Any], key: str) -> float:
    if case["offset"] and key in ("y", "dx", "dgamma", "running_var"):
        return 1e-9
    return 1e-12


def rel_err(got: Any, want: Any) -> float:
    """max |got - want| / max |want| (over all steps)."""
    g = np.concatenate([np.ravel(v) for v in (got if isinstance(got, list) else [got])])
    w = np.concatenate([np.ravel(v) for v in (want if isinstance(want, list) else [want])])
    if g.shape != w.shape:
        return float("inf")
    scale = max(float(np.abs(w).max()) if w.size else 0.0, 1e-300)
    return float(np.abs(g.astype(np.float64) - w).max() / scale) if w.size else 0.0


def compare(case: dict[str, Any], per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """{quantity: [error, tolerance]} plus 'buffers_identical' for one case."""
    got, same = combine(per_rank)
    want = reference(case)
    report: dict[str, Any] = {k: [rel_err(got[k], want[k]), tolerance(case, k)] for k in QUANTITIES}
    report["buffers_identical"] = bool(same)
    return report
