# governed.rollback — one entry point for people and CI.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest workers for make test: test files run in parallel, the files sharing one part of the sandbox's seeded state
# one after another on one worker, then the few that change all of it alone (tests/conftest.py); most of a playbook
# test waits on the platform, so more workers than cores.
PYTEST_WORKERS ?= 3
RVENV := .venv-release
COLL_LINK := build/collections/ansible_collections/governed/rollback
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
ARTIFACT := build/dist/governed-rollback-$(VERSION).tar.gz
# The release tools run from their own venv, first on PATH only for the targets that need them.
RELEASE_PATH := $(CURDIR)/$(RVENV)/bin:$(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: release-tools docs docs-lint release help venv collection sandbox-build sandbox-up sandbox-down sandbox-reset test test-unit test-integration test-sandbox molecule drill lint sanity bench dist clean

help:
	@echo "make drill        set everything up and fire-drill every rollback type against the local sandbox"
	@echo "make test         set everything up and run every test (unit, sandbox, integration, molecule)"
	@echo "make lint         ansible-lint (production profile) and ansible-test sanity"
	@echo "make sandbox-up   build (cached) and start the local platform; make sandbox-down stops it"
	@echo "make bench        benchmarks (print tables)"
	@echo "make dist         build the collection artifact into build/dist/"
	@echo "make release      build it, then galaxy-importer, sanity on the installed copy, ansible-builder create, docs"
	@echo "make docs         the docs site (antsibull-docs + Sphinx) into docs/site/build/html"

$(BIN)/.stamp: requirements.txt requirements-test.txt requirements-nodeps.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-test.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt -c constraints.txt
	touch $@

venv: $(BIN)/.stamp

$(RVENV)/bin/.stamp: requirements-release.txt constraints-release.txt
	test -x $(RVENV)/bin/python || $(PY) -m venv $(RVENV)
	$(RVENV)/bin/python -m pip install -q --upgrade pip
	$(RVENV)/bin/python -m pip install -q -r requirements-release.txt -c constraints-release.txt
	touch $@

release-tools: $(RVENV)/bin/.stamp

$(COLL_LINK):
	mkdir -p $(dir $(COLL_LINK))
	ln -sfn ../../../.. $(COLL_LINK)

# The collection's Python compiled once, so the controller loads its bytecode instead of compiling the source on
# every run (plugins/plugin_utils/_in_process.py); a file edited later is compiled from source until the next make.
collection: venv $(COLL_LINK)
	$(BIN)/python -m compileall -q plugins

sandbox-build:
	sandbox/build.sh

sandbox-up: collection
	sandbox/up.sh

sandbox-down:
	sandbox/down.sh

sandbox-reset: sandbox-up
	sandbox/seed.sh --reset

test-unit: collection
	$(BIN)/pytest -q tests/unit

test-sandbox: sandbox-up
	$(BIN)/pytest -q tests/sandbox

test-integration: sandbox-up
	$(BIN)/pytest -q tests/integration

molecule: sandbox-up
	for f in molecule/*/molecule.yml; do s=$$(basename $$(dirname $$f)); $(BIN)/molecule test -s "$$s" || exit 1; done

test: collection sandbox-up
	GOVERNED_TESTS=parallel $(BIN)/pytest -q -n $(PYTEST_WORKERS) tests/unit tests/sandbox tests/integration
	GOVERNED_TESTS=exclusive $(BIN)/pytest -q tests/sandbox tests/integration
	$(MAKE) --no-print-directory molecule
	$(MAKE) --no-print-directory drill

drill: sandbox-reset
	$(BIN)/ansible-playbook playbooks/drill.yml

lint: collection docs-lint
	$(BIN)/ansible-lint
	sandbox/sanity.sh

docs-lint: collection release-tools
	PATH=$(RELEASE_PATH) ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/build/collections \
		antsibull-docs lint-collection-docs --plugin-docs $(COLL_LINK)
	PATH=$(RELEASE_PATH) antsibull-changelog lint

docs: collection release-tools
	PATH=$(RELEASE_PATH) ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/build/collections docs/site/build.sh

release: dist release-tools docs
	PATH=$(RELEASE_PATH) hacking/release_check.sh $(ARTIFACT)

sanity: lint

dist: collection
	$(BIN)/ansible-galaxy collection build --force --output-path build/dist

bench: sandbox-up
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build .pytest_cache docs/site/rst docs/site/build
