"""``python -m bnlab.cli ...`` runs the ``bnlab`` command (as ``python -m bnlab ...`` does)."""

import sys

from bnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
