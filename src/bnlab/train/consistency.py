"""The check that every rank of a data-parallel job trains the same thing.

Each rank computes a :func:`fingerprint` (digests of the config, the architecture, the names,
shapes and dtypes of its arrays, the optimizer); :func:`check_same` compares the gathered
fingerprints with rank 0's and raises :class:`ConfigMismatchError` naming what differs and
where. :func:`weights_digest` digests the values themselves (to verify a broadcast).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from bnlab.layers.base import Layer
from bnlab.optim import Optimizer

__all__ = [
    "ConfigMismatchError",
    "check_agree",
    "check_same",
    "fingerprint",
    "state_arrays",
    "weights_digest",
]


class ConfigMismatchError(RuntimeError):
    """The ranks of a job do not train the same thing (config, architecture or optimizer)."""


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def state_arrays(model: Layer, optimizer: Optimizer | None) -> dict[str, np.ndarray]:
    """Every array a rank's training state consists of: parameters, buffers, optimizer slots."""
    arrays = {f"param/{k}": v for k, v in model.params.items()}
    arrays.update({f"buffer/{k}": v for k, v in model.buffers.items()})
    for slot, d in ({} if optimizer is None else optimizer.slots).items():
        arrays.update({f"slot/{slot}/{k}": v for k, v in d.items()})
    return arrays


def weights_digest(arrays: dict[str, np.ndarray]) -> str:
    """A digest of the names and bytes of ``arrays`` (equal on two ranks iff equal values)."""
    h = hashlib.sha256()
    for key, a in arrays.items():
        h.update(key.encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def fingerprint(model: Layer, optimizer: Optimizer | None, config: Any) -> dict[str, str]:
    """Digests of what must be the same on every rank (not the values: see the broadcast)."""
    arrays = state_arrays(model, optimizer)
    opt_cfg = None
    if optimizer is not None:
        opt_cfg = {"type": type(optimizer).__name__, "config": optimizer.get_config()}
    return {
        "config": _digest(config),
        "model": _digest({"class": type(model).__name__, "config": model.get_config()}),
        "arrays": _digest([(k, a.shape, str(a.dtype)) for k, a in arrays.items()]),
        "optimizer": _digest(opt_cfg),
    }


_WHAT = {
    "config": "the experiment config (command-line options)",
    "model": "the model architecture (model.get_config())",
    "arrays": "the names, shapes or dtypes of the parameters, buffers or optimizer slots",
    "optimizer": "the optimizer type or hyperparameters",
}


def check_same(prints: Sequence[dict[str, str]]) -> None:
    """Raise ConfigMismatchError naming what differs from rank 0 and on which ranks."""
    bad = {k: [r for r, p in enumerate(prints) if p[k] != prints[0][k]] for k in prints[0]}
    bad = {k: ranks for k, ranks in bad.items() if ranks}
    if bad:
        lines = "; ".join(f"{_WHAT[k]} differs from rank 0's on ranks {v}" for k, v in bad.items())
        raise ConfigMismatchError(
            f"DataParallel: the {len(prints)} ranks do not train the same thing: {lines}. "
            "Start every rank with the same command line and code (one `mpiexec -n N bnlab "
            "run ...`), or fix the rank that builds a different model"
        )


def check_agree(comm: Any, values: dict[str, Any], *, where: str) -> None:
    """Gather ``values`` (JSON-able) from every rank of ``comm``; ConfigMismatchError on every
    rank, naming each key that differs from rank 0's with every rank's value, else nothing.

    The check to make before the first collective of training when each rank reads state of
    its own (a resumed run's directory: its position, its config): a rank that resumes at
    another epoch would otherwise wait forever in a collective the others never enter.
    Collective: every rank must call it. A world of one returns at once.
    """
    if comm.size == 1:
        return
    mine = {k: (_digest(v), repr(v)[:120]) for k, v in values.items()}
    gathered = comm.allgather_object(mine)
    bad = [k for k in mine if any(g.get(k, ("",))[0] != mine[k][0] for g in gathered)]
    if bad:
        text = "; ".join(
            f"{k}: "
            + ", ".join(f"rank {r} {g.get(k, ('', None))[1]}" for r, g in enumerate(gathered))
            for k in bad
        )
        raise ConfigMismatchError(
            f"{where}: the {comm.size} ranks do not see the same run: {text}. Every rank must "
            "see the same run directory (a shared --out, not a node-local one)"
        )
