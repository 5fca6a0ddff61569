# One command per habit. Everything runs from the project's own venv (.venv),
# which `make venv` builds from pyproject.toml; buf comes from npm (package.json).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo dev test browser check lint typecheck proto proto-check buf-lint unit integration e2e load bench clean docs audit

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

node_modules/.bin/buf: package.json package-lock.json
	# npm ci rejects lock files without every platform's optional buf binary (npm 11); install is pinned by package.json.
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# README command 1: the whole service on embedded PostgreSQL and Redis, a real Generate watched to the end.
demo: $(STAMP)
	$(BIN)/datamill dev --demo --data-dir .datamill/demo

dev: $(STAMP)
	$(BIN)/datamill dev

# README command 2: every check CI runs.
test: $(STAMP) proto-check buf-lint lint typecheck browser
	$(BIN)/pytest -p no:cacheprovider

# The dashboard's browser test drives Debian's chromium (tests/e2e/test_dashboard.py); installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP) node_modules/.bin/buf browser
	$(BIN)/pytest tests/e2e

# Not part of `make test`: DATAMILL_LOAD_CLIENTS (200) clients for DATAMILL_LOAD_SECONDS (60), with a report.
load: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -m load tests/load -s

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python scripts/protogen.py

docs: $(STAMP)
	$(BIN)/python scripts/fieldtypes_doc.py
	$(BIN)/python scripts/settings_doc.py

proto-check: $(STAMP)
	$(BIN)/python scripts/protogen.py --check

buf-lint: node_modules/.bin/buf
	npx --no-install buf lint
	npx --no-install buf build -o /dev/null

# Every benchmark, one after the other (about 15 minutes on 2 CPUs); one JSON file in bench/results/.
bench: $(STAMP)
	$(BIN)/python -m bench all

# pip-audit over what .venv holds, from its own venv: exit 0 clean, 1 findings or gaps, 3 blocked (no lookup worked).
audit: $(STAMP)
	$(BIN)/python scripts/audit.py

clean:
	rm -rf $(VENV) .venv-audit node_modules .mypy_cache .ruff_cache .datamill
