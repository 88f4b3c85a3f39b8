# Entry points for building and testing. The control plane (etcd + kube-apiserver built
# from pinned Go modules) is what the integration tests run against; see
# hack/controlplane/README.md.

SHELL := /bin/bash
CONTROLPLANE := hack/controlplane.sh
CONTROLPLANE_DIR ?= /tmp/oos-chat-controlplane

.PHONY: controlplane test up down status

controlplane:
	$(CONTROLPLANE) build

test: controlplane
	cargo test --all-targets

up:
	$(CONTROLPLANE) up --dir $(CONTROLPLANE_DIR)

down:
	$(CONTROLPLANE) down --dir $(CONTROLPLANE_DIR)

status:
	$(CONTROLPLANE) status --dir $(CONTROLPLANE_DIR)
