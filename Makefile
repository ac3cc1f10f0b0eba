# `make demo` and `make test` create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test env clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/attnsim run --config configs/demo.py --workdir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

clean:
	rm -rf runs $(VENV)
