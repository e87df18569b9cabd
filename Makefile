# convoy — every command a developer or CI needs. `make demo` and `make test`
# work on a fresh machine with only Python and access to the package registries.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO
export NO_COLOR := 1

.PHONY: help env test lint typecheck system-deps pytest demo bench constraints clean

help:
	@echo "make demo   - create the environment and run the demo policy end to end"
	@echo "make test   - lint, type-check and run the full test suite"
	@echo "make bench  - run the benchmarks (results in benchmarks/RESULTS.md)"

$(BIN)/.installed: pyproject.toml requirements.txt requirements-dev.txt constraints.txt
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || command -v uv >/dev/null 2>&1 || \
		$(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) venv --quiet --allow-existing -p $(PYTHON) $(VENV)
	$(UV) pip install --quiet -p $(BIN)/python -c constraints.txt \
		-r requirements.txt -r requirements-dev.txt -e .
	@touch $@

env: $(BIN)/.installed

lint: env
	$(BIN)/ruff check include dags plugins tests benchmarks
	$(BIN)/ruff format --check include dags plugins tests benchmarks
	$(BIN)/hadolint --failure-threshold warning Dockerfile

typecheck: env
	$(BIN)/mypy include/convoy

# Debian packages the tests use (headless Chromium for the report page test,
# Prometheus for the verified-rollout and emulator metrics tests); installed
# with apt-get when missing and we are root, as on CI. The kubectl conformance
# test uses the kubectl on PATH; Debian's kubernetes-client (1.20) is
# installed only where there is none, since it conflicts with a newer one.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "chromium is missing: the browser tests will be skipped"; \
		fi; }
	@command -v prometheus >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's prometheus for the analysis tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends prometheus >/dev/null; \
		else \
			echo "prometheus is missing: the tests that scrape the emulator will be skipped"; \
		fi; }
	@command -v kubectl >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's kubernetes-client for the kubectl conformance test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends kubernetes-client >/dev/null; \
		else \
			echo "kubectl is missing: the kubectl conformance test will be skipped"; \
		fi; }

# Test processes (pytest-xdist): 0 or 1 runs the suite serially, 0 in this process.
PYTEST_WORKERS ?= 2

pytest: env
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck lint-deploy system-deps pytest

demo: env
	$(BIN)/python -m convoy.demo

bench: env
	$(BIN)/python benchmarks/run_all.py

constraints: env
	$(UV) pip freeze -p $(BIN)/python | grep -v '^-e ' | grep -v '^convoy' > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .airflow .demo .mypy_cache .ruff_cache .pytest_cache artifacts

# Deployment lint: checkov on deploy/ (Kubernetes manifests) and the Dockerfile.
# checkov downgrades Airflow's dependencies when installed beside it, so it
# runs from its own pinned, cached tool environment (uvx), never from .venv.
CHECKOV_VERSION := 3.3.30
# --skip-download: no network call to the vendor's guideline API (offline CI).
CHECKOV_FLAGS := --quiet --compact --skip-download
CHECKOV := $(UV) tool run --python $(PYTHON) --from checkov==$(CHECKOV_VERSION) checkov

.PHONY: lint-deploy
lint-deploy:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(CHECKOV) -d deploy --framework kubernetes,dockerfile $(CHECKOV_FLAGS)
	$(CHECKOV) -f Dockerfile --framework dockerfile $(CHECKOV_FLAGS)
