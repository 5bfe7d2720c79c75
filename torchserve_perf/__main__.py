"""``python -m torchserve_perf``: the same as the ``torchserve-perf`` command."""

import sys

from torchserve_perf.cli import main

if __name__ == "__main__":
    sys.exit(main())
