"""MPI helper for test_parallel_mpi.py: train three small nets data-parallel, save rank 0's state.

    [mpiexec -n P] python parallel_train.py OUT_DIR --world P [--bn sync|local|none]
        [--steps 20] [--save-at K] [--resume-from DIR] [--fail-rank R --fail-step K]
        [--mismatch-rank R]

Nets (global batch 13, so 2 ranks get [7, 6] and 4 ranks [4, 3, 3, 3]): ``mlp64`` and
``mlp32`` (Dense-BN-Sigmoid x2, Dense; SGD with momentum) and ``conv64`` (Conv-BN-ReLU,
MaxPool, Flatten, Dense; RMSprop). Rank 0 writes ``OUT_DIR/NET.npz`` (parameters and
buffers after the last step) and, with ``--save-at``, ``OUT_DIR/NET.ckpt.npz`` (model,
optimizer and iterator state after step K). Every rank prints one JSON line: its rank, the
world size, the number of established TCP sockets it owns and a digest of each net's
final state (parameters, buffers, optimizer slots and step count).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from bnlab.comm import world
from bnlab.data import BatchIterator
from bnlab.deploy.checkpoint import load_checkpoint, save_checkpoint
from bnlab.layers import BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Sigmoid
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import SGD, RMSprop
from bnlab.train import Callback, DataParallel, Trainer, guard_job, prepare_model

BATCH = 13
NETS = ("mlp64", "conv64", "mlp32")


def build(net: str, bn: bool, width: int = 16):
    def norm(c):
        return [BatchNorm(c, momentum=0.2)] if bn else []

    if net.startswith("mlp"):
        layers = [Dense(20, width, use_bias=not bn, seed=1), *norm(width), Sigmoid()]
        layers += [Dense(width, 16, use_bias=not bn, seed=2), *norm(16), Sigmoid()]
        layers += [Dense(16, 10, seed=3)]
    else:
        layers = [Conv2D(3, 4, 3, padding="same", use_bias=not bn, seed=4), *norm(4), ReLU()]
        layers += [MaxPool2D(2), Flatten(), Dense(64, 5, seed=5)]
    model = Sequential(layers)
    return model.astype(np.float32 if net.endswith("32") else np.float64)


def data(net: str):
    rng = np.random.default_rng(11)
    if net.startswith("mlp"):
        x, y = rng.normal(2.0, 3.0, size=(130, 20)), rng.integers(0, 10, 130)
    else:
        x, y = rng.normal(size=(130, 8, 8, 3)), rng.integers(0, 5, 130)
    return x.astype(np.float32 if net.endswith("32") else np.float64), y


def optimizer(net: str, model):
    if net.startswith("conv"):
        return RMSprop.from_model(model, lr=1e-2)
    return SGD.from_model(model, lr=0.5, momentum=0.9)


class FailAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state) -> None:
        if state.step == self.step:
            raise RuntimeError(f"injected failure at step {state.step}")


def tcp_sockets() -> int:
    """Established TCP connections among this process's file descriptors."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(name):
            for line in Path(name).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "01":  # ESTABLISHED
                    inodes.add(parts[9])
    mine = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        mine += target.startswith("socket:[") and target[8:-1] in inodes
    return mine


def state_digest(model, opt) -> str:
    """A hash of parameters, buffers and optimizer slots: equal on every rank, or a bug."""
    h = hashlib.sha256()
    for key, a in {
        **model.state_dict(),
        **{f"{s}/{k}": v for s, d in opt.slots.items() for k, v in d.items()},
    }.items():
        h.update(key.encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16] + f"-{opt.iterations}"


def train_net(net: str, args, comm) -> str:
    out = Path(args.out)
    bn = args.bn != "none"
    width = 17 if args.mismatch_rank == comm.rank else 16
    model = prepare_model(build(net, bn, width), comm, "global" if args.bn == "sync" else "local")
    x, y = data(net)
    it = BatchIterator(x, y, BATCH, seed=5, drop_last=True)
    opt = optimizer(net, model)
    done = 0
    if args.resume_from:
        ck = load_checkpoint(Path(args.resume_from) / f"{net}.ckpt.npz", model)
        opt.load_state_dict(ck.optimizer_state)
        it.load_state_dict(ck.extra["iterator"])
        done = int(ck.extra["step"])
    callbacks = [FailAt(args.fail_step)] if comm.rank == args.fail_rank else []
    dp = DataParallel(comm, config={"net": net, "bn": args.bn})
    trainer = Trainer(model, SoftmaxCrossEntropy(), opt, it, callbacks=callbacks, parallel=dp)
    trainer.state.step = done
    if args.save_at:
        trainer.fit(args.save_at - done)
        if comm.is_root:
            extra = {"step": args.save_at, "iterator": it.state_dict()}
            save_checkpoint(out / f"{net}.ckpt.npz", model, opt, extra=extra)
    trainer.fit(args.steps - trainer.state.step)
    if comm.is_root:
        np.savez(out / f"{net}.npz", **model.state_dict())
    return state_digest(model, opt)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--bn", choices=("sync", "local", "none"), default="sync")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--save-at", type=int, default=0)
    p.add_argument("--resume-from", default=None)
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--fail-step", type=int, default=0)
    p.add_argument("--mismatch-rank", type=int, default=-1)
    p.add_argument("--nets", default=",".join(NETS))
    args = p.parse_args()
    comm = world(args.world)  # a WorldSizeError if the launcher started separate jobs
    digests = {net: train_net(net, args, comm) for net in args.nets.split(",")}
    info = {"rank": comm.rank, "world": comm.size, "tcp": tcp_sockets(), "state": digests}
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(guard_job(main))
