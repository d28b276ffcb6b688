# keyward — `make demo` runs the main job end to end; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
KEYWARD_TOOLS_DIR ?= $(shell tools/build.sh --path)
export KEYWARD_TOOLS_DIR
CARGO ?= cargo

.PHONY: tools tools-path build generate lint test unit integration demo clean plugin install-plugin

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

# The kubectl plugin is the keyward binary under the name kubectl-keyward: `kubectl keyward report -A`.
PREFIX ?= $(HOME)/.local
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

plugin: ## build keyward (release, without the developer tools) for use as the kubectl plugin
	$(CARGO) build --locked --release --bin keyward --no-default-features

install-plugin: ## install the newest of target/release and target/debug keyward as $(PREFIX)/bin/kubectl-keyward
	@bin=$$(ls -t $(TARGET_DIR)/release/keyward $(TARGET_DIR)/debug/keyward 2>/dev/null | head -n 1 || true); \
	if [ -z "$$bin" ]; then $(MAKE) --no-print-directory plugin; bin=$(TARGET_DIR)/release/keyward; fi; \
	install -d "$(PREFIX)/bin"; \
	install -m 0755 "$$bin" "$(PREFIX)/bin/kubectl-keyward"; \
	echo "installed $$bin as $(PREFIX)/bin/kubectl-keyward"; \
	case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "note: $(PREFIX)/bin is not on PATH; kubectl finds plugins on PATH";; esac
