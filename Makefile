# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test test-fast test-deps lint typecheck lint-imports venv clean chaos bench screenshots

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

run: venv
	$(PY) -m devstack run

# Boundaries between the parts (.importlinter), lint (ruff) and types (mypy strict): pyproject.toml
lint-imports: venv
	$(VENV)/bin/lint-imports

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

# What a few tests need from the system (iproute2, iptables, chromium): installed as root, else
# they skip
test-deps:
	@sh scripts/install-test-deps.sh

# Everything: the checks above, then unit, integration and end-to-end tests
test: venv test-deps lint-imports lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick loop: the unit tests alone (no server of any kind)
test-fast: venv
	$(PY) -m pytest -m unit -q $(PYTEST_ARGS)

# The saga against bare Celery, in one run: python -m bench --help (e.g. BENCH_ARGS=--quick)
bench: venv
	$(PY) -m bench $(if $(BROKER),--broker $(BROKER)) $(BENCH_ARGS)

# docs/ui-*.png: the operator's pages, photographed in chromium on a system of its own
screenshots: venv test-deps
	$(PY) scripts/screenshots.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# BROKER=redis|sentinel|rabbitmq: the broker the run starts for itself (python -m chaos --help)
chaos: venv
	$(PY) -m chaos $(if $(BROKER),--broker $(BROKER)) $(CHAOS_ARGS)
