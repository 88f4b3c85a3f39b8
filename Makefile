# Entry points for building and testing. The control plane (etcd + kube-apiserver built
# from pinned Go modules) is what the integration tests run against; see
# hack/controlplane/README.md.

SHELL := /bin/bash
CONTROLPLANE := hack/controlplane.sh
CONTROLPLANE_DIR ?= /tmp/oos-chat-controlplane
# Kubernetes versions of `make test-matrix` besides the default (v1.36.3, `make test`): the
# ends of k8s-openapi 0.29's supported range.
MATRIX_VERSIONS ?= v1.33.13 v1.37.2
IMAGE ?= oos-chat-operator:0.1.0
EMULATOR_IMAGE ?= oos-emulator:0.1.0

.PHONY: controlplane test test-matrix conformance lint hadolint demo up down status \
	image emulator-image manifests

controlplane:
	$(CONTROLPLANE) build

# The whole suite: the Dockerfile lint, unit + integration tests (real kube-apiserver + etcd,
# in-process emulator; includes the deploy/ manifests and the GitOps health checks), the
# official Python SDK against the emulator, then the Kubernetes version matrix. Builds and
# installs whatever is missing (a fresh machine: about 21 minutes on 2 cores, mostly the three
# kube-apiserver builds; warm: about 6 minutes).
test: controlplane
	hack/hadolint.sh
	cargo test --workspace --no-fail-fast
	hack/conformance.sh
	$(MAKE) test-matrix

# On the oldest and newest Kubernetes that k8s-openapi 0.29 supports (each built on first use
# and cached; cold: 3-4 minutes per version on an idle machine, up to 8 under load, see hack/controlplane/README.md): the controller
# tests, lifecycle included, and tests/deploy.rs (server-side dry runs of deploy/, the RBAC
# lifecycle as the ServiceAccount), and the version check. The whole controller binary rather
# than `controller lifecycle` alone: its tests run in parallel in the same ~15 s.
test-matrix:
	@set -e; for v in $(MATRIX_VERSIONS); do \
	  echo "=== Kubernetes $$v"; \
	  CONTROLPLANE_K8S_VERSION=$$v $(CONTROLPLANE) build >/dev/null; \
	  CONTROLPLANE_K8S_VERSION=$$v cargo test --test controller; \
	  CONTROLPLANE_K8S_VERSION=$$v cargo test --test deploy; \
	  CONTROLPLANE_K8S_VERSION=$$v cargo test --test leader_election; \
	  CONTROLPLANE_K8S_VERSION=$$v cargo test --test controlplane_smoke server_reports_pinned_version; \
	done

conformance:
	hack/conformance.sh

lint: hadolint
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

hadolint:
	hack/hadolint.sh

# Images (needs a container engine; not part of CI). The operator is the default target.
image:
	docker build -t $(IMAGE) .

emulator-image:
	docker build --target emulator -t $(EMULATOR_IMAGE) .

# The install manifests as kubectl would apply them.
manifests:
	kubectl kustomize deploy/
	@echo ---
	kubectl kustomize deploy/overlays/namespaced/

# Runs the operator for real on a local control plane + the emulator (Ctrl-C stops it).
demo:
	hack/demo.sh

up:
	$(CONTROLPLANE) up --dir $(CONTROLPLANE_DIR)

down:
	$(CONTROLPLANE) down --dir $(CONTROLPLANE_DIR)

status:
	$(CONTROLPLANE) status --dir $(CONTROLPLANE_DIR)
