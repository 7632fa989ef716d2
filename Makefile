# gn_det: the README's commands. `make setup` is idempotent; `make test` and `make demo` run it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo clean-output

setup: $(PY)
	$(PY) tools/bootstrap.py

$(PY):
	$(PYTHON) -m venv $(VENV)

# pytest exits 5 when it collects no tests, which make treats as a failure like any other.
test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean-output:
	rm -rf output
