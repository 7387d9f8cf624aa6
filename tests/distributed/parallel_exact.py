"""A data-parallel run whose arithmetic is exact, so P ranks must give one process's bits.

    [mpiexec -n P] python parallel_exact.py [--disagree-rank R]

A linear model (Dense 4 -> 2, float64, L2 penalty 1/16) on small integers, with weights
k/8, learning rate 1/16 and a global batch of 8: every product and sum of four steps is a
dyadic rational with fewer than 53 significant bits (checked against fractions), so the
order of the sums cannot matter and sharding over 2 or 4 ranks must reproduce one process
to the last bit. Rank 0 prints one JSON line: every rank's losses and parameters' bytes (hex).
``--disagree-rank R``: rank R builds its optimizer with another rate (the job must end on
every rank with a ConfigMismatchError naming the optimizer and rank R).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from bnlab.comm import Communicator, world
from bnlab.layers import Dense, Sequential
from bnlab.losses import MSE
from bnlab.optim import L2, SGD
from bnlab.train import DataParallel, guard_job, train_step

STEPS, BATCH = 4, 8


def dyadic_run(comm: Communicator | None, lr: float = 1 / 16) -> dict[str, Any]:
    """Train four steps (one process when ``comm`` is None); the losses and parameters."""
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (BATCH * STEPS, 4)).astype(np.float64)
    t = rng.integers(-2, 3, (BATCH * STEPS, 2)).astype(np.float64)
    model = Sequential([Dense(4, 2, seed=0, kernel_regularizer=L2(1 / 16))]).astype(np.float64)
    model.params["0.W"][...] = rng.integers(-4, 5, (4, 2)) / 8
    opt = SGD.from_model(model, lr=lr)
    parallel = None if comm is None else DataParallel(comm, config={"steps": STEPS})
    if parallel is not None:
        parallel.setup(model, opt)
    losses = []
    for k in range(STEPS):
        rows = slice(k * BATCH, (k + 1) * BATCH)
        losses.append(train_step(model, MSE(), opt, x[rows], t[rows], parallel).loss)
    return {"losses": losses, "params": {k: v.tobytes().hex() for k, v in model.params.items()}}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--disagree-rank", type=int, default=-1)
    args = p.parse_args()
    comm = world()
    lr = 1 / 8 if comm.rank == args.disagree_rank else 1 / 16
    runs = comm.allgather_object(dyadic_run(comm, lr))
    if comm.is_root:  # one line (ranks printing at once may interleave theirs)
        print(json.dumps(runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(guard_job(main))
