# Two commands for newcomers: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TSP := $(VENV)/bin/torchserve-perf
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit lint model-store venv java clean bench-hf bench-threads bench-int8 bench-optimizations bench-profiler traces-summary bench-metrics tune tune-grid compare bench bench-suite bench-memory

$(STAMP): requirements.txt requirements-kserve.txt setup.py
	@scripts/ensure_java.sh
	@scripts/ensure_prometheus.sh
	PYTHON=$(PYTHON) scripts/ensure_kserve_env.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	# Editable: the torchserve-perf command, and imports from any folder (lint needs none: it runs by path).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

model_store/config.properties: $(STAMP) $(shell find torchserve_perf -name '*.py' -o -name '*.yaml' 2>/dev/null)
	$(TSP) model-store

model-store: model_store/config.properties

demo: model-store
	$(TSP) demo

# Static checks from the repository root, with the venv's tools: ruff (style, imports, security rules)
# on all Python files, mypy on the package, and the import contracts (pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check torchserve_perf tests scripts setup.py
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q tests

# The tests that start no processes: seconds, not minutes.
test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf model_store/*.mar model_store/config.properties model_store/metrics.yaml results

# torchserve-perf tune (docs/tuning.md). TUNE_ARGS passes options to both runs, e.g. TUNE_ARGS="--p99-ms 200".
TUNE_ARGS ?=
tune: $(STAMP)
	$(TSP) tune $(TUNE_ARGS)

# The quality bar: the exhaustive grid, then the tuner from scratch, then both winners head to head.
tune-grid: $(STAMP)
	$(TSP) tune --strategy grid --budget-min 60 --confirm-top 3 --out results/tune-grid --fresh $(TUNE_ARGS)
	$(TSP) tune --out results/tune --fresh $(TUNE_ARGS)
	$(TSP) tune compare results/tune-grid/resnet18 results/tune/resnet18 --head-to-head 3

# torchserve-perf bench (docs/benchmarking.md): a TorchServe started from model_store/, closed loop at 1/4/8
# clients. BENCH_ARGS adds or overrides options, e.g. BENCH_ARGS="--rate 20 40 --duration 60".
BENCH_ARGS ?=
bench: model-store
	$(TSP) bench --model-store model_store --model resnet18 $(BENCH_ARGS)

# A suite file of models, payloads and loads into one report (docs/benchmarking.md):
# make bench-suite SUITE=suite.yaml [SUITE_ARGS="--url http://127.0.0.1:8080 --key-file key_file.json"]
SUITE ?=
SUITE_ARGS ?=
bench-suite: $(STAMP)
	@test -n "$(SUITE)" || { echo "make bench-suite: give SUITE=path/to/suite.yaml (docs/benchmarking.md)" >&2; exit 2; }
	$(TSP) bench --suite $(SUITE) $(SUITE_ARGS)

# The side-by-side report (docs/benchmarking.md): results/compare/report.md, its Goals table judged
# against scripts/goals/. COMPARE_ARGS="--quick" to check it works.
GOALS := scripts/goals
COMPARE_ARGS ?=
compare: $(STAMP)
	$(TSP) compare --goals $(GOALS)/compare-tuned.yaml $(GOALS)/compare-defaults.yaml $(COMPARE_ARGS)

# Metrics on vs off in one run (docs/metrics.md). BENCH_METRICS_ARGS="--quick" checks it works.
BENCH_METRICS_ARGS ?=
bench-metrics: $(STAMP)
	$(PY) scripts/bench_metrics.py $(BENCH_METRICS_ARGS)

# Speedup of each optimization plugin on ResNet-18 and the text model, in process and served through
# TorchServe (docs/optimizations.md). BENCH_OPTIMIZATIONS_ARGS="--quick" checks it works.
BENCH_OPTIMIZATIONS_ARGS ?=
bench-optimizations: $(STAMP)
	$(PY) scripts/bench_optimizations.py $(BENCH_OPTIMIZATIONS_ARGS)

# int8 (ONNX Runtime, OpenVINO NNCF, PT2E with --pt2e), OpenVINO and bf16 in process on ResNet-18/50,
# accuracy beside every int8 figure (docs/int8.md). BENCH_INT8_ARGS="--quick" checks it works.
BENCH_INT8_ARGS ?=
bench-int8: $(STAMP)
	$(PY) scripts/bench_int8.py $(BENCH_INT8_ARGS)

# Thread policy vs stock TorchServe on ResNet-18 at 4 and 8 clients (docs/handlers.md).
# BENCH_THREADS_ARGS="--quick" checks it works.
BENCH_THREADS_ARGS ?=
bench-threads: $(STAMP)
	$(PY) scripts/bench_threads.py $(BENCH_THREADS_ARGS)

# Worker memory: ours against stock TorchServe on ResNet-18, RSS per worker and its breakdown (docs/memory.md).
# BENCH_MEMORY_ARGS="--quick" checks it works.
BENCH_MEMORY_ARGS ?=
bench-memory: $(STAMP)
	$(PY) scripts/bench_memory.py $(BENCH_MEMORY_ARGS)

# Transformers text: ours (archive --hf-model) against TorchServe's example approach at 1/4/8 clients,
# padding and int8 in process, accuracy of each lossy path (docs/transformers.md).
# BENCH_HF_ARGS="--quick" checks it works; "--size base" for BERT-base shapes.
BENCH_HF_ARGS ?=
bench-hf: $(STAMP)
	$(PY) scripts/bench_hf.py $(BENCH_HF_ARGS)

# Profiler off / on-but-idle / active / stock ENABLE_TORCH_PROFILER on ResNet-18 (docs/profiling.md).
# BENCH_PROFILER_ARGS="--quick" checks it works.
BENCH_PROFILER_ARGS ?=
bench-profiler: $(STAMP)
	$(PY) scripts/bench_profiler.py $(BENCH_PROFILER_ARGS)

# Markdown + PNG of where the time goes in the traces `make demo` wrote (TRACES=dir for others).
TRACES ?= results/demo/traces
traces-summary: $(STAMP)
	$(TSP) traces $(TRACES)

# Reliability (docs/security.md). `make fuzz`: the decoders' fuzz tests with many more examples
# (FUZZ_EXAMPLES per decoder). `make soak`: ResNet-18 at 8 clients for 10 minutes, profiling and
# metrics on; SOAK_ARGS="--duration 60" for the short version. `make audit`: pip-audit on
# requirements.txt; exits 2 with "NOT CHECKED" when its vulnerability database cannot be reached.
.PHONY: fuzz soak audit
FUZZ_EXAMPLES ?= 3000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -s -p no:logging tests/e2e/test_fuzz.py

SOAK_ARGS ?=
soak: $(STAMP)
	$(PY) scripts/soak.py --json results/soak/report.json $(SOAK_ARGS)

AUDIT_ARGS ?=
audit: $(STAMP)
	$(PY) -m torchserve_perf.tools.audit $(AUDIT_ARGS)

# Decode ceilings of the image handler at decode pool sizes 1 and 2: Pillow, device-side resize, and
# nvjpeg where CUDA and torchvision are present (docs/gpu.md). BENCH_DECODE_ARGS="--quick" checks it works.
.PHONY: bench-decode loadgen-ceiling
BENCH_DECODE_ARGS ?=
bench-decode: $(STAMP)
	$(PY) scripts/bench_decode.py $(BENCH_DECODE_ARGS)

# The load generator's own ceiling against a trivial loopback endpoint, at 1 and 2 client processes
# (LOADGEN_ARGS="--processes 1 4 8 --concurrency 128" on a big host).
LOADGEN_ARGS ?=
loadgen-ceiling: $(STAMP)
	$(PY) -m torchserve_perf.tools.loadgen $(LOADGEN_ARGS)

# Ours with shipped defaults against stock TorchServe (defaults, and one thread per worker) at 1, 4
# and 8 clients, all three servers up at once and the load taken in turns (--rounds), so a noisy
# machine hits each alike, judged against scripts/goals/compare-defaults.yaml:
# results/compare-defaults/report.md.
# `make bench-elastic`: cold vs warm worker load (auto's cached choice) and elastic threads' cost.
.PHONY: compare-defaults bench-elastic
COMPARE_DEFAULTS_ARGS ?= --seconds 30 --warmup 5 --rounds 3
compare-defaults: $(STAMP)
	$(TSP) compare --systems stock_default stock_guided ours_default --concurrency 1 4 8 \
		--goals $(GOALS)/compare-defaults.yaml --out results/compare-defaults $(COMPARE_DEFAULTS_ARGS)

bench-elastic: $(STAMP)
	$(PY) scripts/bench_elastic.py

# Every image family (ResNet-50, MobileNetV3-Large, EfficientNet-B0, ViT-B/16) against stock TorchServe at
# 1, 4 and 8 clients, judged against scripts/goals/zoo.yaml (docs/zoo.md). COMPARE_ZOO_ARGS="--quick" checks it works.
.PHONY: compare-zoo
COMPARE_ZOO_ARGS ?=
compare-zoo: $(STAMP)
	$(TSP) compare --zoo --goals $(GOALS)/zoo.yaml --out results/compare-zoo $(COMPARE_ZOO_ARGS)

# int8 served (docs/int8.md): shipped defaults plus `archive --calibration` (64 seeded synthetic JPEGs)
# beside ours without it and both stock settings, at 1, 4 and 8 clients, all servers up at once and the
# load in turns; ResNet-18 by `compare`, ResNet-50 by `compare --zoo --int8`, each judged against its
# goals file. COMPARE_INT8_ARGS="--quick" checks it works.
.PHONY: compare-int8
COMPARE_INT8_ARGS ?= --seconds 20 --rounds 2
compare-int8: $(STAMP)
	$(TSP) compare --systems stock_default stock_guided ours_default ours_int8 --concurrency 1 4 8 \
		--goals $(GOALS)/int8-resnet18.yaml --out results/compare-int8/resnet18 $(COMPARE_INT8_ARGS)
	$(TSP) compare --zoo --int8 --families resnet50 --goals $(GOALS)/int8-resnet50.yaml \
		--out results/compare-int8/resnet50 $(COMPARE_INT8_ARGS)
