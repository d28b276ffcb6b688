# keyward — `make demo` runs the main job end to end; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
KEYWARD_TOOLS_DIR ?= $(shell tools/build.sh --path)
export KEYWARD_TOOLS_DIR
CARGO ?= cargo

.PHONY: tools tools-path build generate lint test unit integration demo clean

tools: ## build the pinned control plane, kwok, helm and promtool into the cache (no-op when warm)
	tools/build.sh

tools-path: ## print the tools cache directory
	@echo $(KEYWARD_TOOLS_DIR)

build:
	$(CARGO) build --locked --all-targets

generate: ## regenerate crds/ (and the chart's copy) from the code
	$(CARGO) build --locked --bin keyward
	target/debug/keyward crd > crds/managedsecrets.keyward.dev.yaml
	cp crds/managedsecrets.keyward.dev.yaml charts/keyward/crds/managedsecrets.keyward.dev.yaml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit:
	$(CARGO) test --locked --lib --bins

integration: tools
	$(CARGO) test --locked --test '*'
	tools/check-no-strays.sh

test: tools lint unit integration

demo: tools build
	tools/demo.sh

clean:
	$(CARGO) clean
