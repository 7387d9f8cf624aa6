"""Inference throughput of Keras' cifar10_cnn net with BN: bnlab eval, bnlab folded, PyTorch
eval, and ONNX Runtime running bnlab's exported (folded) model.

Issue 14: images/s of the BN net in eval mode, folded, against PyTorch eval and against ONNX
Runtime on the graph ``bnlab.deploy.export_onnx`` writes (a third column). Issue 25's targets:
batch 256 >= 1.25x torch's images/s, batch 1 latency <= torch's; both batch sizes are timed
by default, one table each. Each side runs in a fresh process of its own, the sides
alternating (ours, folded, torch, onnxruntime, ours, ...), through benchmarks/harness.py.
The nets are the ones of benchmarks/bench_cnn.py (BN after every Conv2D and the Dense 512, no
dropout), freshly initialized: throughput does not depend on the weights' values.

    python benchmarks/bench_inference.py [--batch 256,1] [--reps 20 --rounds 3] [--threads N]
                                         [--before SRC] [--sides eval,folded,torch,onnx]

``--before SRC`` adds the two bnlab sides run with another ``src/`` directory first on
``PYTHONPATH`` (e.g. ``git archive 532441e src | tar -x -C /tmp/before``, then
``--before /tmp/before/src``), alternating with the others in the same run, so that before
and after are compared under the same machine load; ``--sides`` picks the sides to run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cnn import ours_model  # noqa: E402
from harness import Job, fmt_time, markdown_table, median, run_jobs  # noqa: E402

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _images(batch: int):  # noqa: ANN202
    import numpy as np

    return np.random.default_rng(0).random((batch, 32, 32, 3), dtype=np.float32)


def ours_eval(batch: int) -> Callable[[], None]:
    """bnlab, BN layers in eval mode (running statistics), not folded."""
    model = ours_model(bn=True).eval()
    x = _images(batch)
    return lambda: None if model.forward(x) is None else None


def ours_folded(batch: int) -> Callable[[], None]:
    """bnlab after ``fold_batch_norm``: every BN merged into the Conv2D/Dense before it."""
    from bnlab.deploy import fold_batch_norm

    model = fold_batch_norm(ours_model(bn=True).eval())
    x = _images(batch)
    return lambda: None if model.forward(x) is None else None


def torch_eval(batch: int) -> Callable[[], None]:
    """PyTorch 2.13 CPU, ``model.eval()`` under ``torch.inference_mode()``, NCHW input."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for cin, cout, pad in ((3, 32, 1), (32, 32, 0), (32, 64, 1), (64, 64, 0)):
        mods += [nn.Conv2d(cin, cout, 3, padding=pad), nn.BatchNorm2d(cout), nn.ReLU()]
        if pad == 0:  # the valid convolution of each pair is followed by pooling
            mods.append(nn.MaxPool2d(2))
    mods += [nn.Flatten(), nn.Linear(2304, 512), nn.BatchNorm1d(512), nn.ReLU()]
    mods.append(nn.Linear(512, 10))
    model = nn.Sequential(*mods).eval()
    x = torch.from_numpy(_images(batch)).permute(0, 3, 1, 2).contiguous()

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


def onnxruntime_folded(batch: int) -> Callable[[], None]:
    """ONNX Runtime (CPU provider) on bnlab's ``export_onnx`` of the folded model."""
    import onnxruntime as ort

    from bnlab.deploy import export_onnx, fold_batch_norm

    model = fold_batch_norm(ours_model(bn=True).eval())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cifar10_cnn_bn.onnx")
        export_onnx(model, path, input_shape=(32, 32, 3))
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = _images(batch)
    return lambda: None if session.run(None, {"input": x}) is None else None


SIDES = {
    "bnlab eval": "ours_eval",
    "bnlab folded": "ours_folded",
    "torch eval": "torch_eval",
    "onnxruntime (bnlab's graph)": "onnxruntime_folded",
}
SHORT = dict(zip(("eval", "folded", "torch", "onnx"), SIDES, strict=True))


def measure(
    sides: list[str], batch: int, reps: int, rounds: int, before: str | None
) -> dict[str, list[float]]:
    """Seconds per batch of each side (and each bnlab side of ``before``), alternating."""
    groups: dict[str, tuple[str, dict[str, str] | None]] = {}
    for side in sides:
        groups[side] = (SIDES[side], None)
        if before and side.startswith("bnlab"):
            path = os.path.abspath(before) + os.pathsep + os.environ.get("PYTHONPATH", "")
            groups[f"{side} (before)"] = (SIDES[side], {"PYTHONPATH": path})
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, (fn, env) in groups.items():
            job = Job("infer", f"bench_inference:{fn}", {"batch": batch}, reps=reps)
            times.setdefault(label, []).extend(run_jobs([job], env=env)["infer"]["times"])
    return times


def report(times: dict[str, list[float]], batch: int, rounds: int, threads: int | None) -> str:
    """A Markdown table of one batch size: time per batch, images/s, speed against torch."""
    ref = "torch eval" if "torch eval" in times else None
    rows = []
    for label, ts in times.items():
        t = median(ts)
        rows.append([
            label, fmt_time(t), fmt_time(min(ts)), f"{batch / t:,.0f}",
            f"{median(times[ref]) / t:.2f}x" if ref else "-",
        ])  # fmt: skip
    what = "latency" if batch == 1 else "throughput"
    header = ["side", f"median per batch of {batch}", "best", "images/s",
              "speed vs torch eval"]  # fmt: skip
    target = "latency <= torch eval's" if batch == 1 else "images/s >= 1.25x torch eval's"
    return (
        f"## Inference {what}: Keras cifar10_cnn with BN, batch {batch}, float32\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"{len(next(iter(times.values())))} timed batches per side over {rounds} "
        f"alternating rounds, {threads or os.cpu_count()} thread(s) per side; target: "
        f"bnlab eval and folded {target}.\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="256,1", help="comma list of batch sizes")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads per side (default: all)")
    ap.add_argument("--before", default=None, help="another bnlab src/ to time alongside")
    ap.add_argument("--sides", default=",".join(SHORT), help="comma list of " + ",".join(SHORT))
    args = ap.parse_args()
    if args.threads:
        os.environ.update({var: str(args.threads) for var in THREAD_VARS})
    try:
        sides = [SHORT[s] for s in args.sides.split(",")]
        batches = [int(b) for b in args.batch.split(",")]
    except KeyError as err:
        ap.error(f"--sides: unknown side {err}; choose from {','.join(SHORT)}")
    except ValueError:
        ap.error(f"--batch: a comma list of ints, got {args.batch!r}")
    for batch in batches:
        times = measure(sides, batch, args.reps, args.rounds, args.before)
        print(report(times, batch, args.rounds, args.threads))


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()
