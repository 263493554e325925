# governed.rollback — one entry point for people and CI.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
COLL_LINK := build/collections/ansible_collections/governed/rollback
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv collection sandbox-build sandbox-up sandbox-down sandbox-reset test test-unit test-integration test-sandbox molecule drill lint sanity bench dist clean

help:
	@echo "make drill        set everything up and fire-drill every rollback type against the local sandbox"
	@echo "make test         set everything up and run every test (unit, sandbox, integration, molecule)"
	@echo "make lint         ansible-lint (production profile) and ansible-test sanity"
	@echo "make sandbox-up   build (cached) and start the local platform; make sandbox-down stops it"
	@echo "make bench        benchmarks (print tables)"
	@echo "make dist         build the collection artifact into build/dist/"

$(BIN)/.stamp: requirements.txt requirements-test.txt requirements-nodeps.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-test.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt -c constraints.txt
	touch $@

venv: $(BIN)/.stamp

$(COLL_LINK):
	mkdir -p $(dir $(COLL_LINK))
	ln -sfn ../../../.. $(COLL_LINK)

collection: venv $(COLL_LINK)

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
	$(BIN)/pytest -q tests/unit tests/sandbox tests/integration
	$(MAKE) --no-print-directory molecule
	$(MAKE) --no-print-directory drill

drill: sandbox-reset
	$(BIN)/ansible-playbook playbooks/drill.yml

lint: collection
	$(BIN)/ansible-lint
	sandbox/sanity.sh

sanity: lint

dist: collection
	$(BIN)/ansible-galaxy collection build --force --output-path build/dist

bench: sandbox-up
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build .pytest_cache
