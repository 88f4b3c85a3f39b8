#!/usr/bin/env bash
# Runs the operator for real: a local kube-apiserver + etcd (hack/controlplane.sh), the OOS
# emulator, the CRD and both samples. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${DEMO_DIR:-/tmp/oos-chat-demo}
EMULATOR_ADDR=${EMULATOR_ADDR:-127.0.0.1:18443}
EMULATOR_ADMIN=${EMULATOR_ADMIN:-127.0.0.1:18444}
# Demo-only credentials, known to the emulator and the operator alone.
export ALIBABA_CLOUD_ACCESS_KEY_ID=demo-access-key
export ALIBABA_CLOUD_ACCESS_KEY_SECRET=demo-access-key-secret

cargo build --bin oos-chat-operator && cargo build -p oos-emulator --bin oos-emulator
# A fresh demo each run: the remote state would otherwise outlive the throwaway cluster.
mkdir -p "$DEMO_DIR" && rm -f "$DEMO_DIR/emulator-state.json"
kubeconfig_line=$(hack/controlplane.sh up --dir "$DEMO_DIR/controlplane" | tail -n 1)
export "${kubeconfig_line?}"
echo "control plane up: $kubeconfig_line"

target/debug/oos-emulator --listen "$EMULATOR_ADDR" --admin-listen "$EMULATOR_ADMIN" \
  --access-key "$ALIBABA_CLOUD_ACCESS_KEY_ID:$ALIBABA_CLOUD_ACCESS_KEY_SECRET" \
  --state-file "$DEMO_DIR/emulator-state.json" &
emulator_pid=$!
cleanup() {
  kill "$emulator_pid" 2>/dev/null || true
  [ -n "${operator_pid:-}" ] && kill "$operator_pid" 2>/dev/null || true
  hack/controlplane.sh down --dir "$DEMO_DIR/controlplane" || true
}
trap cleanup EXIT

kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established crd/chatconfigurations.oos.chatops.dev --timeout=60s
kubectl apply -f deploy/samples/

target/debug/oos-chat-operator --oos-endpoint "http://$EMULATOR_ADDR" --default-region cn-hangzhou \
  --metrics-addr 127.0.0.1:18080 &
operator_pid=$!

kubectl wait --for=condition=Ready chatconfiguration --all --timeout=90s
kubectl get chatconfigurations -o wide
echo
echo "Emulator call counters: curl -s http://$EMULATOR_ADMIN/calls"
curl -s "http://$EMULATOR_ADMIN/calls"; echo
echo "Operator metrics:        curl -s http://127.0.0.1:18080/metrics"
echo "KUBECONFIG for this shell: export $kubeconfig_line"
if [ "${DEMO_EXIT:-}" = 1 ]; then exit 0; fi
echo "Operator running; Ctrl-C to stop everything."
wait "$operator_pid"
