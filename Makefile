# The two commands: `make demo` and `make test`. Both create the virtualenv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SRC := harvester archive queries scripts tests
PYTEST_ARGS ?= -n 2
# `make bench`: every benchmark of scripts/bench/, one after the other, with BENCH_ARGS passed to each
# (e.g. BENCH_ARGS="--count 2000"; an option every one takes); BENCHES picks a subset (e.g. BENCHES="ingest search").
BENCHES ?= ingest static api archive search publish
BENCH_ARGS ?=

.PHONY: install demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

# Goes on past a failing benchmark (bench_static needs nginx, bench_api PostgreSQL + PostGIS) and fails at the end.
bench: $(STAMP)
	@failed=""; \
	for name in $(BENCHES); do \
		echo "== make bench: bench_$$name.py $(BENCH_ARGS)"; \
		$(PY) scripts/bench/bench_$$name.py $(BENCH_ARGS) || failed="$$failed bench_$$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "make bench: failed:$$failed" >&2; exit 1; fi

clean:
	rm -rf $(VENV) demo-out .bench .pytest_cache .mypy_cache .ruff_cache
