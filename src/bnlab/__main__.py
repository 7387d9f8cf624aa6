"""``python -m bnlab ...`` runs the ``bnlab`` command: the same as ``bnlab ...``."""

import sys

from bnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
