# flowlog: `make demo` and `make test` set up everything they need on a fresh
# Debian machine (as root) and then do their job. `make setup` only sets up.

PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup host venv browser test lint unit demo bench clean

setup: host venv

host:
	@scripts/setup-host

venv: $(STAMP)

# Debian's bcc lives in dist-packages and loads libbcc through ctypes; a link
# makes exactly that package (and nothing else from dist-packages) importable.
$(STAMP): pyproject.toml $(wildcard flowlog/*.c flowlog/*/*.c) bpf/flow_event.h | host
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	ln -sfn /usr/lib/python3/dist-packages/bcc \
		"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bcc"
	$(BIN)/python -c 'import bcc, flowlog'
	touch $@

lint: setup
	$(BIN)/ruff check flowlog tests bench
	$(BIN)/ruff format --check flowlog tests bench

# The flow map's tests render pages in Debian's chromium; only the tests need it.
browser:
	@scripts/setup-browser

test: setup browser lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

demo: setup
	$(BIN)/flowlog demo

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
