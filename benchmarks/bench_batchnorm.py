"""Batch norm training forward+backward: bnlab fused, bnlab reference, torch F.batch_norm.

Issue 2, section 6. float32; dense (N, D) and NHWC images for bnlab, NCHW for torch (its
native layout), torch with its default threads and autograd for the backward pass. Each side
runs in its own process, alternating, 3 rounds; cells are medians. GB/s counts x, y, dy and
dx once each (4 arrays) for batch norm and source + destination for a same-size ``x.copy()``.
Target: fused <= 0.5x torch on every shape. The first call of a fresh process (Numba JIT:
compiled from scratch with an empty cache, or loaded from the on-disk cache) is reported
separately.

    python benchmarks/bench_batchnorm.py
    BENCH_THREADS=1 python benchmarks/bench_batchnorm.py   # both sides single-threaded
    python benchmarks/bench_batchnorm.py --fresh           # issue 14: the allocator's part

``--fresh`` (issue 14): every case (one shape, one side) runs alone in a fresh process, so no
earlier, larger allocation has raised glibc's dynamic mmap/trim thresholds: a kernel that
returns fresh large arrays then pays page faults on every call, as in a user's first script.
Each case is timed twice, with the default malloc and with a warm heap
(``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` set so that freed memory is never
returned to the OS); sides: the bnlab kernels, the bnlab ``BatchNorm`` layer on its own (new
output arrays every call, PyTorch's semantics), the layer as a Sequential holds it (its own
output buffers, ``reuse_output``) and torch. Cells are medians of the steady state; "first 5"
is the median of the first five timed calls after one untimed call (Numba cache load).
"kernel out=" passes the same two output arrays every step (``batch_norm_forward(...,
out=y)``, ``batch_norm_backward(..., out=dx)``), as a training loop over the kernels would.

``--fresh --before SRC`` (issue 14) times the bnlab sides of another source tree (e.g. a
``git archive`` of an older revision's ``src/``, run with ``PYTHONPATH=SRC``) alternating with
this one, default malloc only, and reports the after/before ratios: the comparison that
stays meaningful on a busy machine. Cells there are medians and (min) best samples.

    python benchmarks/bench_batchnorm.py --fresh --before /tmp/old/src
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Job, alternate, fmt_time, markdown_table, median, ratio, run_jobs  # noqa: E402

SHAPES: list[tuple[int, ...]] = [(256, 1024), (60, 100), (32, 32, 32, 32), (32, 16, 16, 64)]
SHAPES += [(64, 28, 28, 256)]


def _data(shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    return x, dy


def ours_step(shape: list[int], impl: str) -> Callable[[], None]:
    """bnlab training forward + backward on channels-last data."""
    import numpy as np

    from bnlab.kernels import batchnorm as fused
    from bnlab.kernels import batchnorm_ref as ref

    mod = fused if impl == "fused" else ref
    x, dy = _data(tuple(shape))
    gamma, beta = np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32)

    def step() -> None:
        _, cache = mod.batch_norm_forward(x, gamma, beta)
        mod.batch_norm_backward(dy, cache)

    return step


def out_step(shape: list[int]) -> Callable[[], None]:
    """The bnlab kernels writing y and dx into the same two arrays every step (``out=``)."""
    import numpy as np

    from bnlab.kernels import batchnorm as fused

    x, dy = _data(tuple(shape))
    gamma, beta = np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)

    def step() -> None:
        _, cache = fused.batch_norm_forward(x, gamma, beta, out=y)
        fused.batch_norm_backward(dy, cache, out=dx)

    return step


def copy_step(shape: list[int]) -> Callable[[], None]:
    x, _ = _data(tuple(shape))
    return lambda: None if x.copy() is None else None


def torch_step(shape: list[int]) -> Callable[[], None]:
    """torch.nn.functional.batch_norm (training, running stats) + autograd backward, NCHW."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    x, dy = _data(tuple(shape))
    if len(shape) == 4:
        x, dy = np.moveaxis(x, -1, 1).copy(), np.moveaxis(dy, -1, 1).copy()
    C = shape[-1]
    xt, dyt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(dy)
    w, b = torch.ones(C, requires_grad=True), torch.zeros(C, requires_grad=True)
    rm, rv = torch.zeros(C), torch.ones(C)

    def step() -> None:
        y = F.batch_norm(xt, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
        y.backward(dyt)

    return step


def layer_step(shape: list[int], seq: bool = False) -> Callable[[], None]:
    """bnlab's BatchNorm layer (training mode): forward + backward, on its own or with the
    output buffers a Sequential hands it (``seq``: ``reuse_output``)."""
    from bnlab.layers import BatchNorm

    x, dy = _data(tuple(shape))
    layer = BatchNorm(shape[-1])
    layer.reuse_output = seq

    def step() -> None:
        layer.forward(x)
        layer.backward(dy)

    return step


WARM_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**31)}
FRESH_SIDES = {
    "kernel": "ours_step",
    "kernel out=": "out_step",
    "layer": "layer_step",
    "layer in Sequential": "layer_step",
    "torch": "torch_step",
}


def _kwargs(side: str, shape: tuple[int, ...]) -> dict:
    kw: dict = {"shape": list(shape)}
    if side == "kernel":
        kw["impl"] = "fused"
    if side == "layer in Sequential":
        kw["seq"] = True
    return kw


def fresh_rows(rounds: int = 2) -> list[list[str]]:
    """Each (shape, side, malloc) alone in a fresh process, alternating; see the module doc."""
    threads = os.environ.get("BENCH_THREADS")
    base = {"OMP_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads} if threads else {}
    res: dict[tuple[str, str, str], list[float]] = {}
    first: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(rounds):
        for shape in SHAPES:
            key = "x".join(map(str, shape))
            for heap, env in (("default", None), ("warm", WARM_HEAP)):
                for side, fn in FRESH_SIDES.items():
                    kw = _kwargs(side, shape)
                    job = Job("c", f"bench_batchnorm:{fn}", kw, reps=40, warmup=1, max_seconds=1.5)
                    times = run_jobs([job], env={**base, **(env or {})})["c"]["times"]
                    res.setdefault((key, side, heap), []).extend(times[5:])
                    first.setdefault((key, side, heap), []).extend(times[:5])
    rows = []
    for shape in SHAPES:
        key = "x".join(map(str, shape))
        cells = [(s2, h) for (k, s2, h) in res if k == key]
        t = {c: median(res[(key, *c)]) for c in cells}
        f = {c: median(first[(key, *c)]) for c in cells}
        rows.append([
            str(shape), fmt_time(t["kernel out=", "default"]),
            f"**{ratio(t['kernel out=', 'default'], t['torch', 'default'])}**",
            fmt_time(t["kernel", "default"]), fmt_time(t["kernel", "warm"]),
            fmt_time(f["kernel", "default"]), fmt_time(t["layer in Sequential", "default"]),
            fmt_time(t["layer", "default"]),
            fmt_time(t["layer", "warm"]), fmt_time(t["torch", "default"]),
            fmt_time(t["torch", "warm"]),
            f"**{ratio(t['kernel', 'default'], t['torch', 'default'])}**",
            f"**{ratio(t['layer', 'default'], t['torch', 'default'])}**",
            ratio(t["kernel", "warm"], t["torch", "warm"]),
        ])  # fmt: skip
    return rows


FRESH_HEADER = ["shape", "kernel out= fresh", "kernel out=/torch fresh", "kernel fresh",
                "kernel warm heap", "kernel first 5", "layer in Sequential fresh",
                "layer fresh", "layer warm heap", "torch fresh", "torch warm heap",
                "kernel/torch fresh", "layer/torch fresh", "kernel/torch warm"]  # fmt: skip


BEFORE_SIDES = {"kernel": "ours_step", "layer": "layer_step"}
BEFORE_SIDES["layer in Sequential"] = "layer_step"


def before_rows(before: str, rounds: int = 2) -> list[list[str]]:
    """This tree's bnlab sides against ``before``'s (PYTHONPATH), each case alone in a fresh
    process with the default malloc, alternating (after, before, torch) shape by shape."""
    threads = os.environ.get("BENCH_THREADS")
    base = {"OMP_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads} if threads else {}
    old = {"PYTHONPATH": os.path.abspath(before) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    trees = {"after": {**FRESH_SIDES, "torch": "torch_step"}, "before": BEFORE_SIDES}
    res: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(rounds):
        for shape in SHAPES:
            key = "x".join(map(str, shape))
            for tree, sides in trees.items():
                for side, fn in sides.items():
                    kw = _kwargs(side, shape)
                    job = Job("c", f"bench_batchnorm:{fn}", kw, reps=40, warmup=1, max_seconds=1.5)
                    env = {**base, **(old if tree == "before" else {})}
                    times = run_jobs([job], env=env)["c"]["times"]
                    res.setdefault((key, side, tree), []).extend(times[5:] or times)
    rows = []
    for shape in SHAPES:
        key = "x".join(map(str, shape))
        t = {(s, tr): median(v) for (k, s, tr), v in res.items() if k == key}
        b = {(s, tr): min(v) for (k, s, tr), v in res.items() if k == key}

        def cell(s: str, tr: str, t: dict = t, b: dict = b) -> str:
            return f"{fmt_time(t[s, tr])} ({fmt_time(b[s, tr])})"

        rows.append([
            str(shape), cell("kernel", "before"), cell("kernel", "after"),
            cell("kernel out=", "after"), cell("layer", "before"), cell("layer", "after"),
            cell("layer in Sequential", "before"), cell("layer in Sequential", "after"),
            cell("torch", "after"),
            f"**{ratio(t['kernel', 'after'], t['kernel', 'before'])}**",
            f"**{ratio(t['layer', 'after'], t['layer', 'before'])}**",
            f"**{ratio(t['layer in Sequential', 'after'], t['layer in Sequential', 'before'])}**",
            ratio(t["kernel out=", "after"], t["torch", "after"]),
            ratio(t["layer", "after"], t["torch", "after"]),
        ])  # fmt: skip
    return rows


BEFORE_HEADER = ["shape", "kernel before", "kernel after", "kernel out= after", "layer before",
                 "layer after", "layer in Sequential before", "layer in Sequential after",
                 "torch", "kernel after/before", "layer after/before",
                 "layer in Sequential after/before", "kernel out=/torch",
                 "layer/torch"]  # fmt: skip


def first_call_rows() -> list[list[str]]:
    shape = [32, 16, 16, 64]
    job = [Job("fused", "bench_batchnorm:ours_step", {"shape": shape, "impl": "fused"}, reps=3)]
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = run_jobs(job, env={"NUMBA_CACHE_DIR": cache_dir})["fused"]
        warm = run_jobs(job, env={"NUMBA_CACHE_DIR": cache_dir})["fused"]
    for label, res in (("empty JIT cache (compile)", cold), ("warm on-disk cache", warm)):
        rows.append([label, fmt_time(res["setup_s"]), fmt_time(res["first_call_s"])])
    return rows


def main() -> None:
    if "--fresh" in sys.argv and "--before" in sys.argv:
        before = sys.argv[sys.argv.index("--before") + 1]
        print(f"## Batch norm fwd + bwd, fresh processes, this tree against {before}\n")
        print("Medians (best) of alternating rounds (BENCH_ROUNDS, default 2), default malloc.\n")
        rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
        print(markdown_table(BEFORE_HEADER, before_rows(before, rounds)))
        return
    if "--fresh" in sys.argv:
        print("## Batch norm fwd + bwd, each case alone in a fresh process (float32)\n")
        print(markdown_table(FRESH_HEADER, fresh_rows()))
        return
    ours: list[Job] = []
    theirs: list[Job] = []
    for shape in SHAPES:
        key, kw = "x".join(map(str, shape)), {"shape": list(shape)}
        ours.append(
            Job(f"fused {key}", "bench_batchnorm:ours_step", {**kw, "impl": "fused"}, 60, 3, 1.5)
        )
        ours.append(
            Job(f"ref {key}", "bench_batchnorm:ours_step", {**kw, "impl": "ref"}, 5, 1, 1.0)
        )
        ours.append(Job(f"copy {key}", "bench_batchnorm:copy_step", kw, 60, 3, 1.0))
        theirs.append(Job(f"torch {key}", "bench_batchnorm:torch_step", kw, 60, 3, 1.5))
    threads = os.environ.get("BENCH_THREADS")  # e.g. 1: compare single-threaded on a busy host
    env = {"OMP_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads} if threads else None
    times = alternate({"ours": ours, "torch": theirs}, rounds=3, env=env)
    rows = []
    for shape in SHAPES:
        key = "x".join(map(str, shape))
        sides = (("ours", "fused"), ("ours", "ref"), ("ours", "copy"), ("torch", "torch"))
        t = {k: median(times[g, f"{k} {key}"]) for g, k in sides}
        best = min(times["ours", f"fused {key}"]) / min(times["torch", f"torch {key}"])
        nbytes = 4 * math.prod(shape)
        layout = "NHWC / NCHW" if len(shape) == 4 else "(N, D)"
        rows.append([
            f"{shape} {layout}", fmt_time(t["fused"]), fmt_time(t["ref"]), fmt_time(t["torch"]),
            f"**{ratio(t['fused'], t['torch'])}**", f"{best:.2f}x", ratio(t["ref"], t["torch"]),
            f"{4 * nbytes / t['fused'] / 1e9:.1f}", f"{2 * nbytes / t['copy'] / 1e9:.1f}",
        ])  # fmt: skip
    header = ["shape (bnlab / torch)", "fused", "reference", "torch", "fused/torch",
              "fused/torch (min)", "ref/torch", "fused GB/s", "copy GB/s"]  # fmt: skip
    what = f", {threads} thread(s) each" if threads else ", default threads"
    print(f"## Batch norm training forward + backward (float32{what})\n")
    print(
        "Medians of 3 alternating rounds, each side in its own process (min column: best/best, "
        "less sensitive to a busy machine); target fused/torch <= 0.5x.\n"
    )
    print(markdown_table(header, rows))
    print("\nFirst call in a fresh process, fused, NHWC (32, 16, 16, 64):\n")
    print(markdown_table(["Numba cache", "import + setup", "first call"], first_call_rows()))


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()
