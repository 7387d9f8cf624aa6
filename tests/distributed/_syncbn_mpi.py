"""MPI worker for test_syncbn_mpi.py: ``mpiexec -n N python _syncbn_mpi.py N OUT.json``.

Every rank runs every case of ``syncbn_cases.cases_for(N)`` on its shard with the
synchronized layers over ``bnlab.comm.world(N)`` (which asserts the world size); rank 0
gathers the results, compares them with one process on the whole batch and writes
``{case name: {quantity: [error, tolerance]}}`` to OUT.json.
"""

from __future__ import annotations

import json
import sys

import syncbn_cases as sc

from bnlab.comm import world


def main() -> None:
    n, out = int(sys.argv[1]), sys.argv[2]
    comm = world(n)
    report = {}
    for case in sc.cases_for(n):
        per_rank = comm.allgather_object(sc.rank_results(case, comm))
        if comm.rank == 0:
            report[case["name"]] = sc.compare(case, per_rank)
    if comm.rank == 0:
        report["__world__"] = {"size": comm.size, "type": type(comm).__name__}
        with open(out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
