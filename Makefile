# Two entry points for a fresh machine with Python 3.11+: `make up` and `make test`.
# Both install into .venv first; the install reruns only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python ships as source only: pip builds it once (about 7 minutes on
# 2 cores) and keeps the wheel in its cache for every later install.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install up test lint unit bench system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[triton,cpu,loadtest,dev]'
	touch $@

install: $(STAMP)

## Run the stack: Triton (CPU engine, default model) and the frontend on :8080.
up: install
	$(BIN)/llm-stack up

## Servers the tests start themselves (Redis, Prometheus), from Debian's packages.
system-deps:
	@if command -v redis-server >/dev/null && command -v prometheus >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server prometheus >/dev/null; \
	else echo "note: install redis-server and prometheus for the tests that need them"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	# Each Triton model's model.py is a module named `model`: check them one by one.
	for f in model_repository/*/1/model.py; do $(BIN)/mypy "$$f" || exit 1; done

## Set up and run everything CI runs: lint, type checks, unit and integration tests.
test: install system-deps lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m llm_stack.bench
