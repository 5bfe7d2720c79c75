"""``python -m torchserve_perf.tools.bench``: the same as ``torchserve-perf bench``."""

import sys

from torchserve_perf.tools.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
