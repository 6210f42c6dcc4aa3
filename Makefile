# distillwatch — developer and CI entry points.
#
#   make demo         set up, start the local Kafka broker, run `distillwatch demo`
#   make test         set up, start the broker, run every test (unit, integration, browser, doctests)
#   make test-unit    the fast tests only (no broker, no browser)
#   make help         everything else
#
# The local broker is a real Apache Kafka (KRaft, single node) on 127.0.0.1:9092 run from Maven
# Central jars by deploy/kafka/broker.sh; it keeps running after `make test` / `make demo`
# (`make broker-stop` stops it).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
BROKER := deploy/kafka/broker.sh
PYTEST_ARGS ?=
DOCTEST_PATHS ?= consumers/contract consumers/core consumers/enforce consumers/kafka consumers/times.py consumers/flag_diff.py
CHROMIUM := /usr/bin/chromium

.PHONY: help setup prometheus broker-start broker-stop broker-status broker-logs demo test test-unit \
	test-integration browser bench eval schemas lint clean

help:
	@echo "make setup           create .venv and install distillwatch with its dev extras"
	@echo "make demo            setup + broker-start + distillwatch demo"
	@echo "make test            setup + browser + broker-start + all tests"
	@echo "make test-unit       tests that need neither the broker nor a browser"
	@echo "make test-integration  only the real-broker tests"
	@echo "make broker-start    start (or reuse) the local Kafka broker on 127.0.0.1:9092"
	@echo "make broker-stop     stop it        (also: broker-status, broker-logs)"
	@echo "make browser         install Debian chromium if missing (for the browser tests)"
	@echo "make prometheus      install Debian prometheus if missing (for the metrics test)"
	@echo "make bench | eval | schemas | lint | clean"

# --- environment -------------------------------------------------------------------------------

setup: $(STAMP)

$(STAMP): pyproject.toml native/Cargo.toml native/src/lib.rs
	@if [ ! -x $(VPY) ]; then echo "+ $(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV); fi
	PATH="$$HOME/.cargo/bin:$$PATH" $(PIP) install -e '.[dev]'
	@touch $@

# $(call apt_install,COMMAND,PACKAGE): install Debian's PACKAGE unless COMMAND (a name or a path)
# is already there
define apt_install
	@if command -v $(1) >/dev/null 2>&1; then \
		echo "$(2) present: $$(command -v $(1))"; \
	else \
		SUDO=""; if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
		echo "+ apt-get install $(2)"; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) </dev/null; \
	fi
endef

browser:
	$(call apt_install,$(CHROMIUM),chromium)

# Debian's Prometheus for tests/integration/test_metrics.py (it runs its own instance on a free
# port; the package may also start a system service on :9090, which the tests never use).
prometheus:
	$(call apt_install,prometheus,prometheus)

# --- local Kafka broker ------------------------------------------------------------------------

broker-start:
	bash $(BROKER) start

broker-stop:
	bash $(BROKER) stop

broker-status:
	bash $(BROKER) status

broker-logs:
	bash $(BROKER) logs

# --- run ---------------------------------------------------------------------------------------

demo: setup broker-start
	$(VENV)/bin/distillwatch demo

test: setup browser prometheus broker-start
	$(VPY) -m pytest -q tests $(DOCTEST_PATHS) --doctest-modules $(PYTEST_ARGS)

test-unit: setup
	$(VPY) -m pytest -q tests -m "not integration and not browser" $(PYTEST_ARGS)

test-integration: setup prometheus broker-start
	$(VPY) -m pytest -q tests/integration $(PYTEST_ARGS)

# the bench extra: the Quix Streams peer of bench/kafka.py
bench: setup broker-start
	$(PIP) install -q -e '.[dev,bench]'
	$(VPY) bench/run.py

eval: setup
	$(VENV)/bin/distillwatch evaluate-standard --report reports/standard

schemas: setup
	$(VPY) -m consumers.contract.schemas --write

lint: setup
	$(VENV)/bin/ruff check consumers tests
	$(VENV)/bin/mypy consumers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
