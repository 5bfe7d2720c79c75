"""The tuner behind ``torchserve-perf tune``: search TorchServe settings for the most throughput under a p99 target.

- :mod:`space`: the candidate settings and the grid they span, the guide's starting point.
- :mod:`objective`: one measurement, feasibility against the p99 target, and ranking.
- :mod:`strategy`: pattern search from the heuristic (and the exhaustive grid, for comparison).
- :mod:`state`: the resumable record of evaluated points.
- :mod:`evaluate`: a real TorchServe on loopback, re-registering the model per candidate.
- :mod:`report`: top-N tables, plots, best.json and the winning config files.
- :mod:`compare`: the grid run against the tuner run (``make tune-grid``).
"""
