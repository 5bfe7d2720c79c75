"""``python -m torchserve_perf.tools.loadgen``: the load generator's own ceiling (``make loadgen-ceiling``)."""

import sys

from torchserve_perf.tools.loadgen.ceiling import main

if __name__ == "__main__":
    sys.exit(main())
