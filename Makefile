# keyward — `make demo` runs the main job end to end; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
KEYWARD_TOOLS_DIR ?= $(shell tools/build.sh --path)
export KEYWARD_TOOLS_DIR
KEYWARD_DATABASES_DIR ?= $(shell tools/databases.sh --path)
export KEYWARD_DATABASES_DIR
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: tools tools-path databases build generate lint test unit integration demo clean plugin install-plugin fuzz image image-push system-deps bench bench-faults

tools: ## build the pinned control plane, kwok, helm, promtool and rollouts-controller into the cache (no-op when warm)
	tools/build.sh

tools-path: ## print the tools cache directory
	@echo $(KEYWARD_TOOLS_DIR)

databases: ## fetch the pinned PostgreSQL, MariaDB and Redis from Debian's packages into their cache (no-op when warm)
	tools/databases.sh

build: ## the whole workspace: the operator, keyward-dev (the local control plane, ESC and GitHub servers), tests
	$(CARGO) build --locked --workspace --all-targets

generate: ## regenerate crds/ (and the chart's copy) from the code
	$(CARGO) build --locked --bin keyward
	for crd in managedsecrets accesspolicies; do \
	  target/debug/keyward crd $$crd > crds/$$crd.keyward.dev.yaml; \
	  cp crds/$$crd.keyward.dev.yaml charts/keyward/crds/$$crd.keyward.dev.yaml; \
	done

lint: ## formatting, no import cycles, clippy on the workspace and on the operator as shipped, the shipped binary's contents
	$(CARGO) fmt --all -- --check
	tools/module-graph.py src
	tools/module-graph.py keyward-dev/src
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked -p keyward --lib --bins -- -D warnings
	$(CARGO) build --locked --release -p keyward --bin keyward
	tools/check-shipped.sh $(TARGET_DIR)/release/keyward

unit:
	$(CARGO) test --locked --workspace --lib --bins

integration: tools system-deps databases
	$(CARGO) build --locked -p keyward-dev --bin keyward-dev
	# The amd64 image, which tests/chart.rs runs under podman as the chart would (arm64: `make image`).
	tools/image.sh build amd64
	$(CARGO) test --locked -p keyward --test '*'
	tools/check-no-strays.sh

test: tools lint unit integration

# The demo needs the control plane and kwok only: a fresh machine does not wait for promtool, helm or Argo Rollouts.
DEMO_TOOLS := etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kwok

demo: build
	tools/build.sh $(DEMO_TOOLS)
	tools/demo.sh

# The scale benchmark (issue 16, docs/benchmarks.md; not part of `make test`): N ManagedSecrets on a fresh control
# plane per N, against the floor (tools/floor: the same Secrets applied by a fast Go client). BENCH_N (default
# 1000,10000), BENCH_ENVS, BENCH_NAMESPACES, BENCH_REFRESH, BENCH_STEADY_REFRESH, BENCH_TIMEOUT and
# BENCH_CONCURRENCY reach it from the environment or the command line: `make bench BENCH_N=200`.
# It measures the binary the images ship (static musl, profile dist, built as tools/image.sh builds it and in
# the same cache directory), copied aside; KEYWARD_BIN=<path> measures another.
BENCH_TRIPLE := $(shell uname -m)-unknown-linux-musl
DIST_TARGET_DIR ?= $(or $(KEYWARD_DIST_TARGET_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/keyward/cargo-dist)
bench: system-deps
	tools/build.sh etcd kube-apiserver
	$(CARGO) build --locked --profile dist -p keyward --bin keyward --target $(BENCH_TRIPLE) --target-dir $(DIST_TARGET_DIR)
	install -D -m 0755 $(DIST_TARGET_DIR)/$(BENCH_TRIPLE)/dist/keyward $(TARGET_DIR)/bench/keyward
	tools/floor.sh
	KEYWARD_BIN=$${KEYWARD_BIN:-$(TARGET_DIR)/bench/keyward} $(CARGO) bench --locked -p keyward --bench scale

# Faults at scale (issue 16, docs/benchmarks.md; not part of `make test`): a 10-minute ESC outage at 1,000
# ManagedSecrets, then 100 SIGKILLs of keyward while rotations run. FAULTS_SCENARIOS (outage,kills),
# FAULTS_OUTAGE_N, FAULTS_OUTAGE_SECONDS, FAULTS_REFRESH, FAULTS_ENVS, FAULTS_NAMESPACES, FAULTS_CONCURRENCY,
# FAULTS_KILLS, FAULTS_ROTATING, FAULTS_KILL_MIN_MS, FAULTS_KILL_MAX_MS, FAULTS_TIMEOUT and FAULTS_KEEP (keep
# keyward's logs) reach it from the environment or the command line:
# `make bench-faults FAULTS_OUTAGE_N=100 FAULTS_OUTAGE_SECONDS=60 FAULTS_KILLS=10`.
# As for `bench`, the operator as shipped is copied aside first and that copy is measured.
bench-faults:
	tools/build.sh etcd kube-apiserver
	$(CARGO) build --release --locked -p keyward --bin keyward
	install -D -m 0755 $(TARGET_DIR)/release/keyward $(TARGET_DIR)/bench/keyward
	KEYWARD_BIN=$(TARGET_DIR)/bench/keyward $(CARGO) bench --locked -p keyward --bench faults

system-deps: ## Debian packages and Rust targets for images (podman, skopeo, musl, aarch64 cross, qemu-user, registry)
	tools/system-deps.sh

# The operator image (Containerfile; tools/image.sh): static musl binaries, no daemon needed.
IMAGE_ARCHS ?= amd64 arm64

image: system-deps ## the operator image for IMAGE_ARCHS, as localhost/keyward:VERSION and build/image/keyward-VERSION.oci.tar
	tools/image.sh build $(IMAGE_ARCHS)

image-push: ## copy the image (every architecture) to REGISTRY/keyward:VERSION, e.g. make image-push REGISTRY=ghcr.io/acme
	@test -n "$(REGISTRY)" || { echo "usage: make image-push REGISTRY=host[:port]/path"; exit 2; }
	tools/image.sh push $(REGISTRY)

clean:
	$(CARGO) clean

# Fuzzing (docs/fuzzing.md): nightly Rust and cargo-fuzz; not part of `make test` or CI. Each target runs
# FUZZ_SECONDS, one after another, on one core; the first failure stops the run and leaves its input in
# fuzz/artifacts/<target>/. New inputs the fuzzer keeps go to fuzz/corpus/<target>/ (not checked in); the
# checked-in starting points are fuzz/seeds/<target>/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= path duration yaml definition secret_map import snapshot webhook
FUZZ_TOOLCHAIN ?= +nightly

fuzz: ## run every fuzz target for FUZZ_SECONDS each (default 600), one at a time
	@command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked"; exit 1; }
	cd fuzz && CARGO_BUILD_JOBS=$${CARGO_BUILD_JOBS:-1} $(CARGO) $(FUZZ_TOOLCHAIN) fuzz build --fuzz-dir . -s none
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  case $$t in snapshot|webhook) dict=json;; path|duration) dict=;; *) dict=yaml;; esac; \
	  mkdir -p corpus/$$t; \
	  echo "== fuzz target $$t: $(FUZZ_SECONDS)s (libFuzzer writes fuzz/fuzz-0.log, and prints it at the end)"; \
	  $(CARGO) $(FUZZ_TOOLCHAIN) fuzz run --fuzz-dir . -s none $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -jobs=1 -workers=1 -print_final_stats=1 \
	    $${dict:+-dict=dict/$$dict.dict}; \
	done

# The kubectl plugin is the keyward binary under the name kubectl-keyward: `kubectl keyward report -A`.
PREFIX ?= $(HOME)/.local

plugin: ## build keyward (release, the operator package alone) for use as the kubectl plugin
	$(CARGO) build --locked --release -p keyward --bin keyward

install-plugin: ## install the newest of target/release and target/debug keyward as $(PREFIX)/bin/kubectl-keyward
	@bin=$$(ls -t $(TARGET_DIR)/release/keyward $(TARGET_DIR)/debug/keyward 2>/dev/null | head -n 1 || true); \
	if [ -z "$$bin" ]; then $(MAKE) --no-print-directory plugin; bin=$(TARGET_DIR)/release/keyward; fi; \
	install -d "$(PREFIX)/bin"; \
	install -m 0755 "$$bin" "$(PREFIX)/bin/kubectl-keyward"; \
	echo "installed $$bin as $(PREFIX)/bin/kubectl-keyward"; \
	case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "note: $(PREFIX)/bin is not on PATH; kubectl finds plugins on PATH";; esac
