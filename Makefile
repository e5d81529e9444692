# Two entry points for a fresh clone; nothing needed but python3 and make.
#   make demo   set up .venv, install gaussmix, run the demo on embedded data
#   make test   set up .venv with the test tools, run the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The tests also run the torch path (on the CPU without a GPU). torch is
# pinned: this project's machines carry that release's CPU build locally
# (pip's find-links), while an unpinned torch pulls the newest CUDA build.
TORCH ?= torch==2.13.0

$(VENV)/.installed-torch: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/gaussmix demo

test: $(VENV)/.installed-torch
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks conftest.py
	$(BIN)/ruff format --check src tests benchmarks conftest.py
	$(BIN)/mypy

# Side-by-side timings against scikit-learn (minutes; not part of the tests).
bench: $(VENV)/.installed-torch
	$(BIN)/python benchmarks/bench_em.py
	$(BIN)/python benchmarks/bench_small.py
	$(BIN)/python benchmarks/bench_torch.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
