# gn_det: the README's commands. `make setup` is idempotent; `make test` and `make demo` run it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The suite runs in this many pytest-xdist worker processes: the cores this process may use, at
# most 4 (each worker's tests start training processes of 1-2 GB). Most of a test's time is one
# core's work (imports, subprocesses, small tensors), so 2 workers on 2 cores take ~0.6x the
# serial time (761 s against 1263 s on a 2-core EPYC). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ "$$n" -gt 4 ] && n=4; echo $$n)

DEMO_CONFIG ?= configs/toy/retinanet_R_18_FPN_gnws_shapes.yaml
DEMO_OPTS ?=

.PHONY: setup test test-quick test-device demo clean-output

setup: $(PY)
	$(PY) tools/bootstrap.py

$(PY):
	$(PYTHON) -m venv $(VENV)

# Lint first (.ruff.toml), then the suite; pytest exits 5 when it collects no tests, which make
# treats as a failure like any other. The 20 slowest tests are listed, to keep the suite's time in view.
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest tests -n $(TEST_WORKERS) --durations=20 $(PYTEST_ARGS)

# The inner loop: lint and the tests without the slow and multi-process tiers (tests/pytest.ini).
test-quick: setup
	$(PY) -m ruff check .
	$(PY) -m pytest tests -n $(TEST_WORKERS) -m "not slow and not multiproc" $(PYTEST_ARGS)

# The device acceptance suite (tests/device) on DEVICE: cpu (as `make test` runs it) or cuda.
DEVICE ?= cpu
test-device: setup
	$(PY) -m pytest tests/device -m device --device $(DEVICE) $(PYTEST_ARGS)

# Toy shapes (generated once; val.json is written last, so its presence means complete), then a
# GN+WS RetinaNet R-18-FPN trained from scratch on CPU and evaluated; results under output/demo/.
demo: setup
	test -f datasets/shapes/annotations/val.json || $(PY) datasets/make_shapes.py --out datasets/shapes
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) $(DEMO_OPTS)

clean-output:
	rm -rf output
