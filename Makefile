# twelvefold — every command sets up what it needs first.
#   make demo    run the main example offline (a recorded cassette stands in for the model)
#   make test    run every test
#   make lint    ruff + mypy --strict
#   make fuzz    the CLI fuzz test with many more inputs than `make test` runs
#   make bench   benchmarks (figures go to docs/benchmarks.md by hand, see that page)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# mypy sees the package through a tree of links, because the repository's top-level
# folders (compiler/, runtime/, grammar/) are mapped to twelvefold.* only at install time.
TYPES  := build/typecheck

.PHONY: all setup system-deps demo test fuzz lint bench graphs clean typecheck-tree

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) system-deps

# Debian packages the tests use for real: Graphviz's dot.
system-deps:
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing graphviz (dot) with apt-get"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
	  || echo "could not install graphviz; graph rendering tests will say why they skip"; }

demo: setup
	$(BIN)/python -m examples.demo

test: setup
	$(BIN)/python -m pytest -q

# FUZZ_COUNT inputs (default 5000) from FUZZ_SEED; a failure names its seed and keeps its input.
FUZZ_COUNT ?= 5000
FUZZ_SEED  ?= 20261130
fuzz: setup
	TWELVEFOLD_FUZZ_COUNT=$(FUZZ_COUNT) TWELVEFOLD_FUZZ_SEED=$(FUZZ_SEED) \
	  $(BIN)/python -m pytest -q tests/test_cli_fuzz.py

typecheck-tree:
	@mkdir -p $(TYPES)/twelvefold
	@for d in compiler runtime grammar; do ln -sfn ../../../$$d $(TYPES)/twelvefold/$$d; done
	@for f in twelvefold/*; do ln -sfn ../../../$$f $(TYPES)/twelvefold/$$(basename $$f); done

lint: $(STAMP) typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MYPYPATH=$(TYPES) $(BIN)/mypy -p twelvefold

bench: setup
	$(BIN)/python -m benchmarks

graphs: setup
	$(BIN)/python -m docs.make_graphs

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
