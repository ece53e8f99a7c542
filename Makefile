# Two commands on a fresh machine: `make run` (both services on embedded defaults) and
# `make test` (lint, types, every test). Both build the virtualenv first when needed.
#
# The heavy training stack (torch is a ~5.5 GB CUDA build) lives in a virtualenv cached
# outside the checkout, keyed by the hash of pyproject.toml, so CI reinstalls it only when the
# dependencies change; this checkout is (re)installed into it in editable mode on every run.

PYTHON ?= python3
CACHE ?= $(HOME)/.cache/scantune
DEPS_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
VENV ?= $(CACHE)/venv-$(DEPS_HASH)
BIN := $(VENV)/bin
CODE := service models tests $(wildcard bench)
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: run shell test lint typecheck pytest venv postgres system-deps test-assets bench clean-venvs

run: venv
	@echo "scantune CLI in another terminal: make shell  (or: . $(BIN)/activate)"
	$(BIN)/scantune up $(if $(wildcard ../shared/data),--data-root ../shared/data)

# A shell with the virtualenv active: `scantune` on PATH (exit to leave).
shell: venv
	@echo "scantune is on PATH in this shell; exit to leave"
	@VIRTUAL_ENV=$(VENV) PATH="$(BIN):$$PATH" $${SHELL:-/bin/sh} -i

test: venv postgres test-assets lint typecheck pytest

lint: venv
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

# bench/ holds scripts, not a package: --explicit-package-bases names its modules bench.*
typecheck: venv
	$(BIN)/mypy --explicit-package-bases service models $(wildcard bench)

pytest: venv
	SCANTUNE_TEST_POSTGRES_URL=$(PG_URL) SCANTUNE_TEST_AXE_JS=$(AXE_DIR)/node_modules/axe-core/axe.min.js $(BIN)/pytest -q $(PYTEST_ARGS)

# Quiet unless it fails: setuptools' notice about editable installs is no news on each run.
venv: $(VENV)/.installed
	@$(BIN)/pip install -q --no-deps --no-build-isolation -e . >$(VENV)/editable.log 2>&1 \
		|| { cat $(VENV)/editable.log; exit 1; }

# No prerequisite: the hash in the folder name already tracks pyproject.toml, and a fresh
# clone's file times must not force a rebuild.
$(VENV)/.installed:
	@echo "building $(VENV) (once per dependency change)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e ".[train,serve,dev]"
	touch $@

# Debian packages the tests drive: Orthanc (a real PACS) with its DICOMweb plugin, the DICOM
# validators (dciodvfy, dsrdump, storescu), Chromium for the dashboard's browser tests, npm for
# axe-core, promtool (Debian's prometheus; the daemon is not started) for the chart's alerts.
# Installed only when one is missing.
SYSTEM_PKGS := orthanc orthanc-dicomweb dicom3tools dcmtk chromium openssl prometheus
system-deps:
	@missing=$$(for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
		command -v npm >/dev/null || echo npm); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# axe-core (accessibility checks in the browser tests), from the npm registry, cached like the venv.
AXE_VERSION := 4.10.3
AXE_DIR := $(CACHE)/axe-core-$(AXE_VERSION)
test-assets: $(AXE_DIR)/node_modules/axe-core/axe.min.js
$(AXE_DIR)/node_modules/axe-core/axe.min.js:
	mkdir -p $(AXE_DIR)
	cd $(AXE_DIR) && npm install --silent --no-audit --no-fund axe-core@$(AXE_VERSION)

# PostgreSQL for the tests: start the local cluster when it is installed and down.
postgres:
	@if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		echo "starting PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	fi

bench: venv
	$(BIN)/python bench/train_pneumonia.py
	$(BIN)/python bench/inference.py

clean-venvs:
	rm -rf $(CACHE)/venv-*
