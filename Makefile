# The README's two commands: `make run` and `make test`. Both set everything up
# themselves on a fresh machine that has Python 3.11 and make.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PORT ?= 5000

.PHONY: run test lint bench setup chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(STAMP)
	$(BIN)/flask --app wsgi setup

# Web + workers + dispatcher (and the bundled Redis unless REDIS_URL is set). The first
# time, on a terminal, it offers the demo (DEMO=1 seeds it without asking, DEMO=0 never
# asks; without a terminal or in CI nothing waits).
run: setup
	$(BIN)/flask --app wsgi seed-demo --offer
	@if [ -n "$$REDIS_URL" ]; then \
		exec $(BIN)/honcho start web worker backfill dispatcher; \
	else \
		exec $(BIN)/honcho start web worker backfill dispatcher redis; \
	fi

# Browser tests drive Debian's chromium; install it when missing and we may.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "chromium is missing: install Debian's chromium package (apt-get install chromium)"; exit 1; \
		fi; }

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) chromium lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Every bench/bench_*.py: `name=value` results on stdout, "# " comments on stderr; a
# failing script fails the run. BENCH_QUICK=1 shrinks every size for a smoke run.
bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) *.egg-info
