# Two entry points for a fresh machine with Python 3.11+: `make up` and `make test`.
# Both install into .venv first; the install reruns only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python ships as source only: it is built once (about 7 minutes on 2
# cores) into a wheel folder keyed by its version and build flags, which every later
# install takes. The build is portable (AVX2, no -march=native): pip's own wheel cache
# is keyed by the sdist alone and outlives the machine, and a native build taken to
# another CPU crashes (AMX tile instructions fault on hosts that advertise but do not
# enable AMX).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
LLAMA_CPP := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
LLAMA_WHEELS := $(HOME)/.cache/llm-stack/wheels/$(shell echo '$(LLAMA_CPP) $(CMAKE_ARGS)' | sha1sum | cut -c1-12)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install up test lint unit bench system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
		$(BIN)/python -m pip wheel -q --no-deps --no-cache-dir -w $(LLAMA_WHEELS) '$(LLAMA_CPP)'
	$(BIN)/python -m pip install -q --find-links $(LLAMA_WHEELS) -e '.[triton,cpu,loadtest,dev]'
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
