"""MPI helper for test_residual_mpi.py: train a small residual net data-parallel.

    [mpiexec -n P] python _residual_mpi.py OUT.npz P

A conv stem, an identity block and a projection block (BatchNorm, synchronized when P > 1, and
GroupNorm), global pooling, LayerNorm and Dense; float64, SGD with momentum, 6 steps of a
global batch of 8. Rank 0 writes the final parameters and buffers to OUT.npz.
"""

from __future__ import annotations

import sys

import numpy as np

from bnlab.comm import world
from bnlab.data import BatchIterator
from bnlab.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    GlobalAveragePool2D,
    GroupNorm,
    LayerNorm,
    ReLU,
    Residual,
    Sequential,
)
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import SGD
from bnlab.train import DataParallel, Trainer, guard_job, prepare_model


def build() -> Sequential:
    def block(cin: int, cout: int, stride: int) -> Residual:
        branch = [Conv2D(cin, cout, 3, stride=stride, padding=1, use_bias=False, seed=cout)]
        branch += [BatchNorm(cout), ReLU(), Conv2D(cout, cout, 3, padding=1, seed=cout + 1)]
        branch += [GroupNorm(2, cout)]
        proj = (
            None if stride == 1 else [Conv2D(cin, cout, 1, stride=stride, seed=9), BatchNorm(cout)]
        )
        return Residual(branch, proj)

    layers = [Conv2D(3, 4, 3, padding=1, seed=1), BatchNorm(4), ReLU(), block(4, 4, 1), ReLU()]
    layers += [block(4, 6, 2), ReLU(), GlobalAveragePool2D(), LayerNorm(6), Dense(6, 3, seed=2)]
    return Sequential(layers).astype(np.float64)


def main() -> int:
    out, size = sys.argv[1], int(sys.argv[2])
    comm = world(size)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(48, 6, 6, 3)), rng.integers(0, 3, 48)
    model = prepare_model(build(), comm, "global")
    opt = SGD.from_model(model, lr=0.1, momentum=0.9)
    it = BatchIterator(x, y, 8, seed=4, drop_last=True)
    parallel = DataParallel(comm) if comm.size > 1 else None
    Trainer(model, SoftmaxCrossEntropy(), opt, it, parallel=parallel).fit(6)
    if comm.is_root:
        np.savez(out, **model.state_dict())
    return 0


if __name__ == "__main__":
    sys.exit(guard_job(main))
