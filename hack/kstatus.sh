#!/usr/bin/env bash
# Builds hack/kstatus (kstatus status.Compute from sigs.k8s.io/cli-utils v0.37.2 plus Flux's
# healthCheckExprs evaluation with cel-go) once per source hash into the cache, and prints the
# binary's path (last line). tests/gitops_health.rs runs it on objects from real reconciles.
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/kstatus" && pwd)"
HASH="$(cd "$SRC" && cat go.mod go.sum main.go | sha256sum | cut -c1-16)"
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/oos-chat-operator/kstatus/$HASH"
BIN="$DIR/kstatus"
if [[ ! -x "$BIN" ]]; then
  command -v go >/dev/null || { echo "kstatus: go is required" >&2; exit 1; }
  mkdir -p "$DIR"
  exec 9>"$DIR/.build.lock"
  flock 9
  if [[ ! -x "$BIN" ]]; then
    echo "kstatus: building $BIN" >&2
    start=$SECONDS
    (cd "$SRC" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$BIN.tmp.$$" .) ||
      { rm -f "$BIN.tmp.$$"; echo "kstatus: go build failed" >&2; exit 1; }
    mv -f "$BIN.tmp.$$" "$BIN"
    echo "kstatus: built in $((SECONDS - start)) s" >&2
    # Builds of older sources are never used again.
    find "$(dirname "$DIR")" -mindepth 1 -maxdepth 1 -type d ! -name "$HASH" -exec rm -rf {} +
  fi
fi
echo "$BIN"
