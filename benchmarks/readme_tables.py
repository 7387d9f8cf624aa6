"""Print the README's results tables from run directories (bnlab.experiments.tables).

    python benchmarks/readme_tables.py RUN_DIR [RUN_DIR ...]

Each run directory's table is chosen by its config.json; cifar10-keras runs (one per model)
and a population-stats-epochs run over the BN checkpoints are combined into the README's one
per-epoch table. A run over several seeds (``--seeds N``: mnist-sigmoid, mnist-lr,
renorm-small-batch) gives the mean and the min-max over the seeds in each cell. Paste the
output into README.md or docs/experiments.md instead of typing numbers by hand.
"""

from __future__ import annotations

import sys

from bnlab.experiments.tables import readme_tables

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) > 1 else 2)
    print(readme_tables(sys.argv[1:]), end="")
