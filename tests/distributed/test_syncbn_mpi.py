"""SyncBatchNorm/SyncBatchRenorm across real MPI processes == one process on the whole batch.

One mpiexec launch per world size runs every case of ``syncbn_cases.py`` (splits [4,4],
[3,5], [1,6] on 2 ranks; [2,2,2,2] and [4,0,7,2] on 4, oversubscribed; dense and NHWC;
BatchNorm and BatchRenorm with rmax/dmax active; mean 0 and mean 1e6; ghost batches).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize("n", [2, 4])
def test_sync_layers_on_mpi_ranks_equal_one_process(run_mpi, tmp_path, n):
    out = tmp_path / "report.json"
    run_mpi(n, HERE / "_syncbn_mpi.py", str(n), str(out), timeout=240)
    report = json.loads(out.read_text())
    assert report.pop("__world__") == {"size": n, "type": "MPIComm"}
    assert len(report) >= 10
    failures = []
    for name, result in report.items():
        assert result.pop("buffers_identical") is True, f"{name}: ranks' buffers differ"
        for quantity, (err, tol) in result.items():
            if not err <= tol:
                failures.append(f"{name} {quantity}: error {err:.3g} > {tol:g}")
    assert not failures, "\n".join(failures)
