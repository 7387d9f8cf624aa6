"""Floor 3, beside the training loop: data-parallel training over a :mod:`bnlab.comm` world.

* :mod:`bnlab.parallel.data_parallel`: :class:`DataParallel` (state check and broadcast,
  sharded global batches, one gradient allreduce, the shared evaluation), :func:`shard_bounds`,
  :func:`prepare_model` (SyncBatchNorm for ``bn_sync="global"``), :func:`for_experiment`;
* :mod:`bnlab.parallel.consistency`: the check that every rank trains the same thing
  (:class:`ConfigMismatchError`);
* :mod:`bnlab.parallel.faults`: :func:`guard_job`, so that one rank's failure ends the job.

``Trainer(..., parallel=DataParallel(comm))`` trains data-parallel; see the README's
"Data-parallel training".
"""

from bnlab.parallel.data_parallel import (
    BN_SYNC_MODES,
    ConfigMismatchError,
    DataParallel,
    for_experiment,
    is_root,
    prepare_model,
    shard_bounds,
)
from bnlab.parallel.faults import guard_job, rank_prefix

__all__ = [
    "BN_SYNC_MODES",
    "ConfigMismatchError",
    "DataParallel",
    "for_experiment",
    "guard_job",
    "is_root",
    "prepare_model",
    "rank_prefix",
    "shard_bounds",
]
