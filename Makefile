# The two entry points of the README. Both create .venv and install everything on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN    := checkpoints/mod_add_p113

.PHONY: run test bench lab

# torch==2.13.0 first: it is the CPU build on this machine; a bare `torch` pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

# Train the default p = 113 run (continuing it if it is already there), analyse it, render its report.
run: $(STAMP)
	$(BIN)/python -m interp.train mod_add --p 113 --out $(RUN) --resume
	$(BIN)/python -m interp.report $(RUN)

# Two pytest-xdist workers (one torch thread each, tests/conftest.py): the suite in about half the time on 2 cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python -m interp.bench

# The walkthrough notebooks in JupyterLab (installed with the test extras; tests/test_lab.py runs notebook 1 in it).
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks
