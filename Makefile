# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test lint-imports venv clean chaos bench

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

run: venv
	$(PY) -m devstack run

lint-imports: venv
	$(VENV)/bin/lint-imports

test: venv lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

# The saga against bare Celery, in one run: python -m bench --help (e.g. BENCH_ARGS=--quick)
bench: venv
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache

chaos: venv
	$(PY) -m chaos $(CHAOS_ARGS)
