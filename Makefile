# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test lint-imports venv clean

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

clean:
	rm -rf var .pytest_cache
