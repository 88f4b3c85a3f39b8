#!/usr/bin/env bash
# Generates the pinned wrapper module hack/controlplane/apiserver/<version>/ for one
# Kubernetes release (one directory per supported version; hack/controlplane.sh picks one
# with CONTROLPLANE_K8S_VERSION).
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/apiserver, ...) at
# v0.0.0 and resolves them through `=> ./staging/src/...` replaces that only work inside
# its own repository. A module that imports it must replace every one of them with the
# published v0.<minor>.<patch> tag. The list is read from the release's own go.mod so a
# version bump can never miss (or invent) a staging module.
#
# Usage: hack/controlplane/gen-replaces.sh KUBERNETES_VERSION   (e.g. v1.36.3)
# Then commit hack/controlplane/apiserver/<version>/go.mod and go.sum.
set -euo pipefail

K8S_VERSION="${1:?usage: $0 KUBERNETES_VERSION (e.g. v1.36.3)}"
if [[ ! "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
  echo "gen-replaces: expected a version like v1.36.3, got '$K8S_VERSION'" >&2
  exit 2
fi
STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
MOD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/apiserver/$K8S_VERSION"
command -v jq >/dev/null || { echo "gen-replaces: jq is required" >&2; exit 1; }

# Read the release's go.mod from the module cache (download it if needed). Run outside
# the wrapper module so its current (possibly stale) requirements play no part.
GOMOD_FILE="$(cd /tmp && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | jq -r '.GoMod')"
[[ -f "$GOMOD_FILE" ]] || { echo "gen-replaces: no go.mod for k8s.io/kubernetes@${K8S_VERSION}" >&2; exit 1; }
GO_DIRECTIVE="$(go mod edit -json "$GOMOD_FILE" | jq -r '.Go')"

mapfile -t STAGING < <(go mod edit -json "$GOMOD_FILE" |
  jq -r '.Replace[]? | select(.New.Path | startswith("./staging/src/")) | .Old.Path' | sort -u)
if ((${#STAGING[@]} == 0)); then
  echo "gen-replaces: found no staging replaces in $GOMOD_FILE" >&2
  exit 1
fi

# Start from a clean go.mod: stale requirements from an older pin must not survive.
mkdir -p "$MOD_DIR"
cd "$MOD_DIR"
rm -f go.mod go.sum
# The same module path for every version: only the directory tells them apart.
go mod init oos-chat-operator/hack/controlplane/apiserver >/dev/null 2>&1
go mod edit -go="$GO_DIRECTIVE"
args=()
for m in "${STAGING[@]}"; do
  args+=("-replace=${m}=${m}@${STAGING_VERSION}")
done
go mod edit "${args[@]}"
echo "gen-replaces: ${#STAGING[@]} staging modules -> ${STAGING_VERSION} (from $GOMOD_FILE)" >&2

# Record the binaries as tools: go.mod + go.sum then pin everything the build needs.
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}"
go get -tool "k8s.io/kubernetes/cmd/kubectl@${K8S_VERSION}"
go mod tidy
echo "gen-replaces: wrote $MOD_DIR/go.mod and go.sum" >&2
