# twelvefold — every command sets up what it needs first.
#   make demo    run the main example offline (a recorded cassette stands in for the model)
#   make test    run every test
#   make lint    ruff + mypy --strict
#   make fuzz    the CLI fuzz test with many more inputs than `make test` runs
#   make test-install   pip install . into a fresh virtualenv and use it (slow; CI runs it)
#   make bench   benchmarks (figures go to docs/benchmarks.md by hand, see that page)
#   make mutants the mutation score of the properties (slow; never part of make test)
#   make screenshots  retake the inbox's pictures in docs/images/ (headless Chromium)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The repository's top-level folders (compiler/, runtime/, grammar/) are twelvefold.* through
# the links twelvefold/{compiler,runtime,grammar} inside the checkout, and through
# pyproject.toml's package-dir once installed. A strict editable install maps them through a
# tree of links under build/ that mypy can read from any folder (the default editable mode
# uses an import hook that mypy cannot follow). That tree lists files, not folders: it is
# rebuilt when the set of files changes (LINKED records it), which `make setup` checks.
EDITABLE := --config-settings editable_mode=strict
LINKED   := $(VENV)/.linked-files
LIST_FILES := find twelvefold compiler runtime grammar -type f ! -name '*.pyc' | sort
# setuptools announces every editable install with a multi-line warning; it says nothing here.
QUIET_PIP := PYTHONWARNINGS=ignore::UserWarning $(BIN)/pip install --quiet

.PHONY: all setup system-deps linked-files demo test test-install fuzz lint bench mutants graphs screenshots clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(QUIET_PIP) --upgrade pip
	$(QUIET_PIP) -e '.[dev]' $(EDITABLE)
	$(LIST_FILES) > $(LINKED)
	touch $(STAMP)

linked-files: $(STAMP)
	@$(LIST_FILES) > $(LINKED).new
	@cmp -s $(LINKED).new $(LINKED) || { echo "files added or removed: refreshing the editable install"; \
	  $(QUIET_PIP) --no-deps -e . $(EDITABLE) && mv $(LINKED).new $(LINKED); }
	@rm -f $(LINKED).new

setup: linked-files system-deps

# Debian packages the tests use for real: Graphviz's dot, Chromium for the inbox's
# browser tests (driven by playwright; `playwright install` cannot download a browser here),
# and PostgreSQL, whose throwaway clusters the PostgreSQL store's tests start
# (tests/support/postgres.py; under CI=true they fail, never skip, without it).
system-deps:
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing graphviz (dot) with apt-get"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
	  || echo "could not install graphviz; graph rendering tests will say why they skip"; }
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium with apt-get"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium; the inbox's browser tests will say why they skip"; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql with apt-get"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || echo "could not install postgresql; the PostgreSQL store's tests will say why they skip"; }

demo: setup
	$(BIN)/python -m examples.demo

# One test process per core (pytest-xdist); TEST_WORKERS=0 runs them all in this one.
TEST_WORKERS ?= auto
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# `pip install .` (no extras) into a fresh virtualenv: every command and a user's pytest work.
test-install: setup
	$(BIN)/python -m pytest -q -m install tests/test_install.py

# FUZZ_COUNT inputs (default 5000) from FUZZ_SEED; a failure names its seed and keeps its input.
FUZZ_COUNT ?= 5000
FUZZ_SEED  ?= 20261130
fuzz: setup
	TWELVEFOLD_FUZZ_COUNT=$(FUZZ_COUNT) TWELVEFOLD_FUZZ_SEED=$(FUZZ_SEED) \
	  $(BIN)/python -m pytest -q tests/test_cli_fuzz.py


lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p twelvefold

bench: setup
	$(BIN)/python -m benchmarks

# Every committed mutant (tests/mutation/mutants.py) judged by `twelvefold test`, two at a time.
mutants: setup
	$(BIN)/python -m tests.mutation --jobs 2

graphs: setup
	$(BIN)/python -m docs.make_graphs

# docs/images/inbox-{phone,desktop}.png, from the inbox's browser test (headless Chromium).
screenshots: setup
	TWELVEFOLD_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_server_inbox_browser.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
