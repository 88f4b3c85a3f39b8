#!/usr/bin/env bash
# The scale benchmark (BENCHMARKS.md): builds the release binaries, then runs benches/scale.rs
# against a real kube-apiserver + etcd, the oos-emulator binary and the operator binary.
#
#   hack/bench.sh                                  # N = 100, 1,000 and 5,000, every phase
#   hack/bench.sh --sizes 1000 --qps-modes none    # any benches/scale.rs flag (see --help)
#
# Output: a summary on stdout (also in target/bench/scale-<time>.log), the full figures in
# target/bench/scale-<time>.json, process logs under target/bench/logs/. Every process the
# benchmark starts is stopped when it ends, fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p oos-chat-operator -p oos-emulator --bins
hack/controlplane.sh build >/dev/null
mkdir -p target/bench
echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)" >&2
cargo bench --bench scale -- "$@" 2>&1 | tee "target/bench/scale-$(date -u +%Y%m%dT%H%M%SZ).log"
