# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: env demo test test-tf test-jax lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,tfrs,serving]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/rankmixer demo

# The whole suite and every docstring example on the TensorFlow backend, then the layer and
# model tests and every backend-neutral docstring example again on JAX (CPU; tests marked
# `slow` run on TensorFlow only). TEST_WORKERS pytest-xdist processes, one test file
# each at a time (`--dist loadfile`: a file's fixtures and subprocesses stay in one worker);
# TEST_WORKERS=0 runs everything in this process. XLA compiles at optimisation level 0 in the
# tests (set by the root conftest.py unless XLA_FLAGS names a level; it halves the JAX run).
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: test-tf test-jax

test-tf: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q $(XDIST) tests keras_rankmixer

test-jax: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q $(XDIST) -m "not slow" tests/layers tests/models keras_rankmixer

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs build *.egg-info
