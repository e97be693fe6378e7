# Every target creates (or reuses) the virtual environment in .venv and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast reliability bench bench-quick clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: pip then takes the CPU build instead of resolving a multi-GB CUDA one.
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rvc_compile.demo

# Also writes the hostile-input table of this run (docs/RELIABILITY.md's format) to out/RELIABILITY.md,
# and prints the 15 slowest tests (the suite must stay within 30 min on 2 cores of an AVX2-only CPU).
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 --reliability-report=out/RELIABILITY.md

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Only the hostile-input and fault tests; regenerates docs/RELIABILITY.md (~15 min on 2 cores).
reliability: $(STAMP)
	$(BIN)/python -m pytest -q -m reliability --reliability-report=docs/RELIABILITY.md

# The benchmark suite behind docs/PERFORMANCE.md: builds every recipe in recipes/ against the full-size
# demo checkpoint, benchmarks them against the baselines and the floor (~20 min on 2 cores).
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py
	$(BIN)/python benchmarks/isa_section.py   # this machine's CPU-class section (docs/performance/isa-CLASS.md)

# The same pipeline on a small model in a few minutes; writes out/bench-quick/, never docs/.
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf out .pytest_cache
