# The README's two commands: `make serve` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv serve build test test-core test-site lint bench clean

# Create the virtual environment once; reinstall only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[docs,test]"
	touch $(STAMP)

venv: $(STAMP)

test-core: $(STAMP)
	$(BIN)/pytest src -q

test: test-core

lint: $(STAMP)
	$(BIN)/ruff check src tests docs

clean:
	rm -rf site .cache/notes
