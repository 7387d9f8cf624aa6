"""A residual net (SyncBatchNorm in branches and projections, GroupNorm, LayerNorm) trained on
2 MPI ranks equals one process on the whole batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def test_residual_net_on_two_ranks_equals_one_process(run_mpi, tmp_path):
    run_mpi(1, HERE / "_residual_mpi.py", str(tmp_path / "one.npz"), "1", timeout=240)
    run_mpi(2, HERE / "_residual_mpi.py", str(tmp_path / "two.npz"), "2", timeout=240)
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert sorted(one.files) == sorted(two.files) and "5.1.1.running_var" in one.files
    for key in one.files:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-9, atol=1e-11, err_msg=key)
    assert int(one["5.1.1.num_batches_tracked"]) == 6 and one["5.1.1.running_mean"].any()
