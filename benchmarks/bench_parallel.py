"""The CIFAR-10 BN net's training step: 1 rank x 2 BLAS threads against 2 ranks x 1 thread.

    .venv/bin/python benchmarks/bench_parallel.py [--steps 20] [--json FILE]

runs the configurations of ``CONFIGS`` one after the other, each in fresh processes:

* ``1 x 1``: one process, OPENBLAS/NUMBA threads 1 (at two batch sizes, for the model);
* ``1 x 2``: one process, 2 threads;
* ``2 x 1``: ``mpiexec -n 2``, 1 thread each, data-parallel with SyncBatchNorm (bn_sync global),
  each rank on half of the global batch.

The nets are the BN nets of ``cifar10-keras`` (batch 32, RMSprop) and ``mnist-sigmoid``
(batch 60, SGD); a step is forward, softmax cross-entropy, backward and the update, on
random inputs. Also timed: cifar10-keras's batch assembly per image (gather, scale,
augment), which every rank does for the whole global batch. Per step the wall time (rank 0)
and, with 2 ranks, the time spent inside the collectives on each rank: the gradient allreduce
(bnlab.train.DataParallel) and the SyncBN allgathers/allreduces, measured by wrapping the
communicator. That time includes waiting for the slower rank.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.comm import Communicator

HERE = Path(__file__).resolve()


class TimedComm(Communicator):
    """A communicator proxy that adds the time of every collective to ``seconds``."""

    def __init__(self, comm: Communicator) -> None:
        self.comm, self.seconds, self.calls = comm, 0.0, 0
        self.rank, self.size = comm.rank, comm.size

    def _timed(self, name: str, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = getattr(self.comm, name)(*args, **kw)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def allreduce(self, buf: np.ndarray) -> None:
        self._timed("allreduce", buf)

    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        self._timed("allgather", send, recv)

    def bcast(self, buf: np.ndarray, root: int = 0) -> None:
        self.comm.bcast(buf, root)

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.comm.allgather_object(obj)

    def barrier(self) -> None:
        self.comm.barrier()


def build(net: str) -> tuple[Any, Any, tuple[int, ...]]:
    """(model, optimizer, image shape) of the experiment's BN net."""
    if net == "mnist":
        from bnlab.experiments.mnist.nets import build_net
        from bnlab.optim import SGD

        model = build_net(True, 0, hidden=[100, 100, 100], init_std=0.1)
        return model, SGD.from_model(model, lr=0.5), (784,)
    from bnlab.experiments.cifar10_keras.config import Cifar10KerasConfig
    from bnlab.experiments.cifar10_keras.nets import build_model, build_optimizer

    cfg = Cifar10KerasConfig.from_dict()
    model = build_model("bn", cfg)
    return model, build_optimizer("bn", model, cfg), (32, 32, 3)


def assembly_seconds_per_image(n: int = 256) -> float:
    """What cifar10-keras spends per image to assemble a batch: gather, scale, augment."""
    from bnlab.experiments.cifar10_keras.config import Cifar10KerasConfig
    from bnlab.experiments.cifar10_keras.nets import epoch_batches

    x = np.random.default_rng(0).integers(0, 256, (4 * n, 32, 32, 3), dtype=np.uint8)
    cfg = Cifar10KerasConfig.from_dict({"batch_size": n})
    it = epoch_batches(x, np.zeros(4 * n, np.int64), cfg, 1)
    it.next_batch()
    t0 = time.perf_counter()
    for _ in range(3):
        it.next_batch()
    return (time.perf_counter() - t0) / (3 * n)


def worker(net: str, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    from bnlab.comm import world
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.train import DataParallel, prepare_model, train_step

    comm = world()
    grad_comm, bn_comm = TimedComm(comm), TimedComm(comm)
    model, opt, shape = build(net)
    model = prepare_model(model, bn_comm, "global")
    dp = DataParallel(grad_comm, config={"batch": batch})
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss_fn = SoftmaxCrossEntropy()
    dp.setup(model, opt)
    walls = []
    for i in range(warmup + steps):
        if i == warmup:
            grad_comm.seconds = bn_comm.seconds = 0.0
        comm.barrier()
        t0 = time.perf_counter()
        train_step(model, loss_fn, opt, x, y, dp)
        walls.append(time.perf_counter() - t0)
    walls = walls[warmup:]
    mine = {"grad_s": grad_comm.seconds / steps, "bn_s": bn_comm.seconds / steps}
    everyone = comm.allgather_object(mine)
    return {
        "net": net,
        "ranks": comm.size,
        "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")),
        "batch": batch,
        "step_s": float(np.median(walls)),
        "grad_allreduce_s": [e["grad_s"] for e in everyone],
        "syncbn_s": [e["bn_s"] for e in everyone],
        "grad_bytes": dp.message_bytes,
        "bn_channels": [int(v.size) for k, v in model.params.items() if k.endswith("gamma")],
        "assembly_s_per_image": assembly_seconds_per_image() if net == "cifar" else 0.0,
    }


def launch(net: str, ranks: int, threads: int, batch: int, args: Any) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, str(HERE), "--worker", "--net", net, "--batch", str(batch)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    if ranks > 1:
        cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=170, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# (net, ranks, threads, global batch): the asked comparison (cifar 1x2 against 2x1), and the
# one-thread steps at two batch sizes that the model in SCALING.md interpolates
CONFIGS = [
    ("cifar", 1, 1, 32),
    ("cifar", 1, 1, 16),
    ("cifar", 1, 2, 32),
    ("cifar", 2, 1, 32),
    ("mnist", 1, 1, 60),
    ("mnist", 1, 1, 15),
    ("mnist", 2, 1, 60),
]


def table(results: list[dict[str, Any]]) -> str:
    head = "| net | ranks x threads | global batch | step | grad allreduce | SyncBN | comm share |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        g, b = max(r["grad_allreduce_s"]), max(r["syncbn_s"])
        comm_s = max(np.add(r["grad_allreduce_s"], r["syncbn_s"]))
        share = f"{comm_s / r['step_s']:.0%}" if r["ranks"] > 1 else "-"
        cells = [r["net"], f"{r['ranks']} x {r['threads']}", str(r["batch"])]
        cells += [f"{r['step_s'] * 1e3:.2f} ms", f"{g * 1e3:.3f} ms", f"{b * 1e3:.3f} ms", share]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- the alpha-beta model of SCALING.md ---------------------------------------------------------
# modelled links: (latency alpha in s, bandwidth in bytes/s); typical MPI figures, not measured
LINKS = {"10 Gbit/s": (20e-6, 1.25e9), "100 Gbit/s": (2e-6, 12.5e9)}


def t_allreduce(nbytes: float, p: int, alpha: float, bw: float) -> float:
    """Rabenseifner (reduce-scatter + allgather): 2 log2(P) alpha + 2 (P-1)/P m / bw."""
    return 0.0 if p == 1 else 2 * math.ceil(math.log2(p)) * alpha + 2 * (p - 1) / p * nbytes / bw


def t_allgather(nbytes: float, p: int, alpha: float, bw: float) -> float:
    """Recursive doubling: log2(P) alpha + (P-1) s / bw for s bytes per rank."""
    return 0.0 if p == 1 else math.ceil(math.log2(p)) * alpha + (p - 1) * nbytes / bw


def modelled_step(r: dict[str, Any], fit: tuple[float, float], p: int, b: float, link: Any):
    """(compute, gradient allreduce, SyncBN, batch assembly) seconds of one step at P ranks
    with b samples per rank; compute = c0 + c1 b from the measured one-thread steps."""
    alpha, bw = link
    comp = fit[0] + fit[1] * b
    grad = t_allreduce(r["grad_bytes"], p, alpha, bw)
    bn = sum(t_allgather((2 * c + 1) * 8, p, alpha, bw) + t_allreduce(2 * c * 8, p, alpha, bw)
             for c in r["bn_channels"])  # fmt: skip
    return comp, grad, bn, r["assembly_s_per_image"] * b * p


def model_tables(results: list[dict[str, Any]], measured_link: Any) -> str:
    """Modelled step times at 1, 8 and 64 ranks: per-rank batch fixed, and global batch fixed."""
    links = {**LINKS, "measured here (2 ranks, one machine)": measured_link}
    out = []
    for net, local, global_b in (("cifar", 32, 512), ("mnist", 60, 960)):
        ones = sorted((r["batch"], r["step_s"]) for r in results if r["net"] == net
                      and r["ranks"] == 1 and r["threads"] == 1)  # fmt: skip
        (b1, t1), (b2, t2) = ones[0], ones[-1]
        fit = (t1 - (t2 - t1) / (b2 - b1) * b1, (t2 - t1) / (b2 - b1))
        r = next(x for x in results if x["net"] == net and x["ranks"] > 1)
        out.append(f"\n{net}: compute {fit[0] * 1e3:.2f} ms + {fit[1] * 1e6:.1f} us/sample "
                   f"(1 thread); gradients {r['grad_bytes']:,} B; SyncBN channels "
                   f"{r['bn_channels']}\n")  # fmt: skip
        out.append("| link | ranks | batch per rank | step | compute | grad | SyncBN | "
                   "assembly | samples/s vs 1 rank |")  # fmt: skip
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, link in links.items():
            base = local / sum(modelled_step(r, fit, 1, local, link))
            cases = ((1, local), (8, local), (64, local), (8, global_b / 8), (64, global_b / 64))
            for p, b in cases:
                parts = modelled_step(r, fit, p, b, link)
                total = sum(parts)
                cells = [name, str(p), f"{b:g}", f"{total * 1e3:.2f} ms"]
                cells += [f"{v * 1e3:.2f} ms" for v in parts]
                cells.append(f"{p * b / total / base:.1f}x")
                out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--model",
        nargs=2,
        metavar=("PARALLEL_JSON", "ALLREDUCE_JSON"),
        help="print the modelled tables from the --json files of this script and bench_allreduce",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--net", default="cifar", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model:
        results = json.loads(Path(args.model[0]).read_text())
        ar = json.loads(Path(args.model[1]).read_text())
        print(model_tables(results, (ar["alpha_s"], ar["bw"])))
        return
    if args.worker:
        res = worker(args.net, args.batch, args.steps, args.warmup)
        from bnlab.comm import world

        if world().is_root:
            print(json.dumps(res), flush=True)
        return
    results = [launch(net, r, t, b, args) for net, r, t, b in CONFIGS]
    print(f"median of {args.steps} steps after {args.warmup}; times inside collectives: the")
    print("slower rank's, waiting included\n")
    print(table(results))
    for r in results:
        if r["ranks"] > 1:
            print(f"\n{r['net']}: gradient message {r['grad_bytes']:,} bytes per rank and step")
    print(f"cifar batch assembly: {results[0]['assembly_s_per_image'] * 1e6:.1f} us per image")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
    from harness import print_provenance

    print_provenance()  # the launcher (its MPI workers, --worker, print nothing more)
