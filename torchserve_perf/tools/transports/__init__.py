"""``torchserve-perf compare --transports``: one model over several transports side by side.

* :mod:`.config`: :class:`TransportsConfig`, what one run measures.
* :mod:`.workloads`: the models and payloads (the 120 kB JPEG on ResNet-18, a small tensor on a
  small MLP) and the model store they are served from.
* :mod:`.run`: one TorchServe with every transport on, each workload over each protocol.
* :mod:`.report`: the JSON report and its Markdown tables.
"""
