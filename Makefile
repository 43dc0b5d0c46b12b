# The two commands a newcomer needs:
#   make run    the exporter on its defaults (http://localhost:9877/metrics)
#   make test   install everything the tests need, lint, type-check and run every test
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# The real vLLM (CPU build) and the tiny model it serves, for the contract tests and the demo.
VLLM_VENV ?= .venv-vllm
VLLM_MODEL_DIR ?= .cache/vllm-tiny-llama
export VLLM_VENV VLLM_MODEL_DIR

# Tests run side by side (pytest-xdist): most wait on real processes rather than compute.
# --dist loadgroup keeps an xdist_group (the session's one real vLLM) on one worker.
TEST_WORKERS ?= 4
XDIST := -n $(TEST_WORKERS) --dist loadgroup
# More pytest options for both test runs, e.g. PYTEST_ARGS=--durations=30
PYTEST_ARGS ?=

.PHONY: run test deps base-deps venv lint typecheck unit real-engine bench docs doctor mixin vllm vllm-serve demo-vllm

run: venv
	$(VENV)/bin/autoglm-exporter $(ARGS)

doctor: venv
	$(VENV)/bin/autoglm-exporter doctor $(ARGS)

# Everything but the real vLLM first (install, lint, types, tests); then the real vLLM's install
# (minutes once, cached after) and the tests that drive it, even when a unit test failed (-k: one
# CI run reports both). Any failure fails `make test`.
test: base-deps lint typecheck
	$(MAKE) -k unit real-engine

deps:
	VENV=$(VENV) scripts/install-deps.sh

base-deps:
	WITH_VLLM=0 VENV=$(VENV) scripts/install-deps.sh

venv:
	PYTHON_ONLY=1 VENV=$(VENV) scripts/install-deps.sh

lint:
	$(VENV)/bin/ruff check exporter tests bench mixin demo
	$(VENV)/bin/ruff format --check exporter tests mixin demo

# The package is `autoglm_exporter` on disk `exporter/`: a link under that name lets mypy follow
# mixin's and demo's imports of it (through the editable install's import hook it cannot, and
# ignore_missing_imports would pass them unchecked).
typecheck:
	mkdir -p .cache/mypy-path && ln -sfn ../../exporter .cache/mypy-path/autoglm_exporter
	MYPYPATH=.cache/mypy-path $(VENV)/bin/mypy --cache-dir=.cache/mypy -p autoglm_exporter -p mixin -p demo

unit:
	CI=$${CI:-} $(PY) -m pytest $(XDIST) -m "not real_engine" $(PYTEST_ARGS)

# The tests of the real vLLM (marker real_engine): the session's server and the fault matrix's own.
real-engine: base-deps vllm
	CI=$${CI:-} $(PY) -m pytest -n 2 --dist loadgroup -m real_engine $(PYTEST_ARGS)

# The real vLLM in its own venv and the tiny model (`make deps` does this too).
vllm:
	scripts/vllm/install.sh

# Serve the tiny model with the real vLLM on 127.0.0.1:8000 (VLLM_PORT=... for another port).
vllm-serve: vllm
	scripts/vllm/serve.sh $(ARGS)

# The demo with the real vLLM in place of the look-alike engine: vLLM on :8000, Redis on :6379,
# the demo API on :8080. Watch it with `make run` (or `docker compose up -d` for the dashboards).
demo-vllm: vllm venv
	VENV=$(VENV) scripts/vllm/demo.sh

docs: deps
	$(PY) -m autoglm_exporter.commands.metricsdoc README.md

# Alert and recording rules, dashboards and the Kubernetes PrometheusRule, from mixin/ (tests check drift).
mixin: venv
	$(PY) -m mixin

# Every bench script to its PASS/FAIL line, then those lines (bench/README.md; ARGS=--quick: seconds).
bench:
	VENV=$(VENV) scripts/install-deps.sh
	VENV=$(VENV) bench/run_all.sh $(ARGS)
