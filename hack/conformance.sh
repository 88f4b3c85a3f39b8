#!/usr/bin/env bash
# Conformance suite: the official Alibaba Cloud Python SDK against oos-emulator.
# Creates/reuses a pinned venv, builds the emulator, runs pytest (the fixtures start the emulator
# on free loopback ports). Exit 5 ("no tests collected") counts as failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/oos-chat-operator/venv"
REQS="$ROOT/tests/conformance/requirements.txt"
PY="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
# Reinstall only when the pins changed.
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
  echo "$WANT" > "$STAMP"
fi

cd "$ROOT"
cargo build -p oos-emulator --bin oos-emulator
export OOS_EMULATOR_BIN="$ROOT/target/debug/oos-emulator"

set +e
timeout 600 "$VENV/bin/python" -m pytest -p no:cacheprovider tests/conformance "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "conformance: pytest collected no tests; failing" >&2
  exit 1
fi
exit $rc
