# Every target sets up what it needs: a venv in .venv with pai installed (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pai-installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow lint report clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The main job on embedded data (scikit-learn's digits): none vs random vs magnitude at sparsity 0.9,
# trained briefly on the CPU, then the comparison table.
demo: $(STAMP)
	$(PY) launch.py -m experiment=demo
	$(PY) -m pai.report outputs/demo/runs --out outputs/demo/report

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5 = no slow test collected

lint: $(STAMP)
	$(VENV)/bin/ruff check pai tests launch.py benchmarks

# The report of the last sweep: make report RUNS=outputs/runs
RUNS ?= outputs/runs
report: $(STAMP)
	$(PY) -m pai.report $(RUNS)
