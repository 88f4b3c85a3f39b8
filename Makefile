# Entry points for building and testing. The control plane (etcd + kube-apiserver built
# from pinned Go modules) is what the integration tests run against; see
# hack/controlplane/README.md.

SHELL := /bin/bash
CONTROLPLANE := hack/controlplane.sh
CONTROLPLANE_DIR ?= /tmp/oos-chat-controlplane

.PHONY: controlplane test conformance lint demo up down status

controlplane:
	$(CONTROLPLANE) build

# The whole suite: unit + integration tests (real kube-apiserver + etcd, in-process emulator),
# then the official Python SDK against the emulator. Builds/installs whatever is missing.
test: controlplane
	cargo test --workspace --no-fail-fast
	hack/conformance.sh

conformance:
	hack/conformance.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Runs the operator for real on a local control plane + the emulator (Ctrl-C stops it).
demo:
	hack/demo.sh

up:
	$(CONTROLPLANE) up --dir $(CONTROLPLANE_DIR)

down:
	$(CONTROLPLANE) down --dir $(CONTROLPLANE_DIR)

status:
	$(CONTROLPLANE) status --dir $(CONTROLPLANE_DIR)
