# Every target creates (or reuses) the virtual environment in .venv and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench bench-quick clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: pip then takes the CPU build instead of resolving a multi-GB CUDA one.
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rvc_compile.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The benchmark suite behind docs/PERFORMANCE.md: builds every recipe in recipes/ against the full-size
# demo checkpoint, benchmarks them against the baselines and the floor (~20 min on 2 cores).
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# The same pipeline on a small model in a few minutes; writes out/bench-quick/, never docs/.
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf out .pytest_cache
