# Two commands for newcomers: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test model-store venv java clean bench-threads bench-optimizations bench-profiler bench-metrics tune tune-grid compare

$(STAMP): requirements.txt setup.py
	@scripts/ensure_java.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

model_store/config.properties: $(STAMP) $(shell find handlers plugins models -name '*.py' -o -name '*.yaml' 2>/dev/null) scripts/build_model_store.py
	$(PY) scripts/build_model_store.py

model-store: model_store/config.properties

demo: model-store
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf model_store/*.mar model_store/config.properties model_store/metrics.yaml results
