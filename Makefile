# flowlog: `make demo`, `make test` and `make image` set up everything they
# need on a fresh Debian machine (as root) and then do their job. `make setup`
# only sets up.

PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGE := flowlog:$(VERSION)
# pip inside the image build installs from wheels made here, with this
# machine's pip configuration: the build cannot always reach (or verify) an index.
WHEELHOUSE := build/wheelhouse
# chroot isolation: the OCI runtimes refuse to run build steps on cgroup v1
# hybrid hosts such as this one. Override for other hosts.
PODMAN_BUILD_FLAGS ?= --isolation chroot --network host

.PHONY: setup host venv browser test lint unit demo bench clean image image-host image-test

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

# Tests marked `image` are left out here (pyproject.toml's addopts); `make image-test` runs them.
test: setup browser lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

demo: setup
	$(BIN)/flowlog demo

bench: setup
	$(BIN)/python -m bench

image-host:
	@scripts/setup-image-host

# The image's Python dependencies and the build backend, as wheels; remade
# when pyproject.toml changes.
$(WHEELHOUSE)/.complete: pyproject.toml | venv
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(BIN)/python scripts/image-requirements pyproject.toml > build/image-requirements.txt
	$(BIN)/pip wheel --quiet --wheel-dir $(WHEELHOUSE) -r build/image-requirements.txt
	touch $@

image: image-host $(WHEELHOUSE)/.complete
	scripts/build-image $(IMAGE) $(WHEELHOUSE) $(PODMAN_BUILD_FLAGS)

image-test: image
	FLOWLOG_IMAGE=$(IMAGE) $(BIN)/python -m pytest -ra -m image tests/deploy/test_image.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build
