#!/usr/bin/env bash
# A real, throwaway Kubernetes control plane (etcd + kube-apiserver, no nodes) for tests
# and local runs, built from Go modules pinned in hack/controlplane/{apiserver,etcd}.
#
#   hack/controlplane.sh build [kube-apiserver|etcd|kubectl|all]
#                                   build missing binaries, print the asset dir (last line)
#   hack/controlplane.sh up     [--dir D]   start in the background, print KUBECONFIG=<path> (last line)
#   hack/controlplane.sh down   [--dir D]   stop apiserver, then etcd; remove the state dir
#   hack/controlplane.sh status [--dir D]   exit 0 if up and ready
#   hack/controlplane.sh version            the selected Kubernetes version
#   hack/controlplane.sh versions           every version with a pinned module
#
# The kubeconfig `up` writes verifies the server: the script makes a throwaway CA per `up`
# (openssl), signs kube-apiserver's serving certificate (127.0.0.1, localhost) with it, puts
# the CA into the kubeconfig as certificate-authority-data and deletes the CA key.
#
# Environment:
#   CONTROLPLANE_K8S_VERSION                            Kubernetes version (default v1.36.3); one
#                                                       of `versions` (hack/controlplane/apiserver/<v>/)
#   CONTROLPLANE_ASSETS (fallback KUBEBUILDER_ASSETS)  use binaries from this dir, never build
#   XDG_CACHE_HOME                                      cache root (default ~/.cache)
#   CONTROLPLANE_KUBECTL=1                              `build` (no target) also builds kubectl
set -euo pipefail

DEFAULT_K8S_VERSION="v1.36.3"
K8S_VERSION="${CONTROLPLANE_K8S_VERSION:-$DEFAULT_K8S_VERSION}"
ETCD_VERSION="v3.6.16"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULES="$HERE/controlplane"
APISERVER_MODULE="$MODULES/apiserver/$K8S_VERSION"
DEFAULT_DIR="/tmp/oos-chat-controlplane"
READY_TIMEOUT=90
STOP_TIMEOUT=15
MARKER=".oos-chat-controlplane"

log() { echo "controlplane: $*" >&2; }
die() { log "error: $*"; exit 1; }

cache_root() { echo "${XDG_CACHE_HOME:-$HOME/.cache}/oos-chat-operator/controlplane"; }
cache_dir() { echo "$(cache_root)/$K8S_VERSION"; }

known_versions() {
  local d
  for d in "$MODULES"/apiserver/v*/; do
    [[ -f "$d/go.mod" ]] && basename "$d"
  done | sort -V
}

check_version() {
  [[ -f "$APISERVER_MODULE/go.mod" ]] && return 0
  die "no pinned module for Kubernetes $K8S_VERSION (CONTROLPLANE_K8S_VERSION); known: $(known_versions | tr '\n' ' ')(add one with hack/controlplane/gen-replaces.sh)"
}

# The dir binaries are read from: an explicit override, else the build cache.
asset_dir() {
  if [[ -n "${CONTROLPLANE_ASSETS:-}" ]]; then echo "$CONTROLPLANE_ASSETS"
  elif [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then echo "$KUBEBUILDER_ASSETS"
  else cache_dir; fi
}
assets_overridden() { [[ -n "${CONTROLPLANE_ASSETS:-}${KUBEBUILDER_ASSETS:-}" ]]; }

ldflags_k8s() {
  local v="$K8S_VERSION" major minor
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  local f="-s -w"
  # component-base feeds the server's /version; client-go's copy feeds kubectl's client version.
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  echo "$f"
}

# build_one NAME MODULE_DIR PACKAGE LDFLAGS: rebuild only when the binary is missing or
# the stamp (pinned go.mod/go.sum hashes + flags) differs, so a bumped pin rebuilds.
build_one() {
  local name="$1" mod="$2" pkg="$3" ldflags="$4" dir stamp
  dir="$(cache_dir)"
  stamp="$(printf '%s\n' "$pkg" "$ldflags" "CGO_ENABLED=0 -trimpath -buildvcs=false"
           (cd "$mod" && sha256sum go.mod go.sum))"
  if [[ -x "$dir/$name" && -f "$dir/$name.stamp" && "$(cat "$dir/$name.stamp")" == "$stamp" ]]; then
    return 0
  fi
  # The same binary built for another Kubernetes version (etcd is shared by all): link it.
  local other
  for other in "$(cache_root)"/*/"$name.stamp"; do
    [[ -f "$other" && "$(cat "$other")" == "$stamp" && -x "${other%.stamp}" ]] || continue
    [[ "$other" == "$dir/$name.stamp" ]] && continue
    ln -f "${other%.stamp}" "$dir/$name" 2>/dev/null || cp -f "${other%.stamp}" "$dir/$name"
    printf '%s\n' "$stamp" >"$dir/$name.stamp"
    log "reused $name from $(dirname "$other")"
    return 0
  done
  log "building $name from $pkg (cold: a few minutes, ~2 GB RAM)"
  local start=$SECONDS tmp="$dir/.$name.tmp.$$"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp" "$pkg") ||
    { rm -f "$tmp"; die "go build of $name failed"; }
  mv -f "$tmp" "$dir/$name"
  printf '%s\n' "$stamp" >"$dir/$name.stamp"
  log "built $name in $((SECONDS - start)) s"
}

cmd_build() {
  local what="${1:-}"
  local dir
  dir="$(asset_dir)"
  if assets_overridden; then
    for b in kube-apiserver etcd; do
      [[ -x "$dir/$b" ]] || die "$b not found in asset dir $dir (CONTROLPLANE_ASSETS/KUBEBUILDER_ASSETS)"
    done
    echo "$dir"
    return 0
  fi
  check_version
  command -v go >/dev/null || die "go is required to build the control plane"
  mkdir -p "$dir"
  # Two test binaries may start on a fresh machine at once: one builds, the other waits.
  exec 9>"$dir/.build.lock"
  flock 9
  local targets=()
  case "$what" in
    "") targets=(kube-apiserver etcd); [[ "${CONTROLPLANE_KUBECTL:-}" == 1 ]] && targets+=(kubectl) ;;
    all) targets=(kube-apiserver etcd kubectl) ;;
    kube-apiserver | etcd | kubectl) targets=("$what") ;;
    *) die "unknown build target '$what' (kube-apiserver|etcd|kubectl|all)" ;;
  esac
  for t in "${targets[@]}"; do
    case "$t" in
      kube-apiserver) build_one kube-apiserver "$APISERVER_MODULE" k8s.io/kubernetes/cmd/kube-apiserver "$(ldflags_k8s)" ;;
      kubectl) build_one kubectl "$APISERVER_MODULE" k8s.io/kubernetes/cmd/kubectl "$(ldflags_k8s)" ;;
      etcd) build_one etcd "$MODULES/etcd" go.etcd.io/etcd/server/v3 "-s -w" ;;
    esac
  done
  flock -u 9
  echo "$dir"
}

# A loopback TCP port no socket uses. Picked below the kernel's ephemeral range so an
# outgoing connection cannot grab it between this check and the server's bind. Still
# racy against other tools picking ports; `up` retries on new ports if a bind fails.
free_port() {
  local lo hi p
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
  ((lo > 11000)) || lo=61000 hi=65535 # unusual range: use the space above it instead
  for _ in $(seq 1 200); do
    if ((lo == 61000)); then p=$((lo + RANDOM % (hi - lo))); else p=$((10000 + RANDOM % (lo - 10000))); fi
    if [[ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]]; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# pid_alive PIDFILE NAME: the recorded pid still runs the expected binary (guards against pid reuse).
pid_alive() {
  local pidfile="$1" name="$2" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name" || return 1
  # A zombie has exited already.
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]
}

# stop PIDFILE NAME: SIGTERM, wait up to STOP_TIMEOUT s for exit, then SIGKILL.
stop_proc() {
  local pidfile="$1" name="$2" pid
  pid_alive "$pidfile" "$name" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while pid_alive "$pidfile" "$name" && ((SECONDS < deadline)); do sleep 0.1; done
  if pid_alive "$pidfile" "$name"; then
    log "$name (pid $pid) did not exit in ${STOP_TIMEOUT} s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while pid_alive "$pidfile" "$name" && ((SECONDS < deadline)); do sleep 0.1; done
  fi
  pid_alive "$pidfile" "$name" && die "$name (pid $pid) is still running"
  rm -f "$pidfile"
}

# Start a detached process that survives the calling shell; its pid goes to PIDFILE.
spawn() {
  local pidfile="$1" logfile="$2"
  shift 2
  # setsid: own session, so the caller's terminal/job control signals don't reach it;
  # the inner shell records its own pid and then execs, so the pid is the server's.
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >"$logfile" 2>&1 &
  local i
  for i in $(seq 1 50); do [[ -s "$pidfile" ]] && return 0; sleep 0.02; done
  die "could not start $3"
}

parse_dir() {
  DIR="$DEFAULT_DIR"
  while (($#)); do
    case "$1" in
      --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
      --dir=*) DIR="${1#--dir=}"; shift ;;
      *) die "unknown argument '$1'" ;;
    esac
  done
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
}

api_get() { # api_get PATH -> body on stdout, fails on non-2xx; verifies the serving cert
  curl -sSf --cacert "$DIR/certs/ca.crt" --max-time 5 -H "Authorization: Bearer $(cat "$DIR/admin.token")" \
    "https://127.0.0.1:$(cat "$DIR/apiserver.port")$1"
}

# A CA for this state dir and a serving certificate for 127.0.0.1/localhost signed by it.
# The CA key is deleted once it has signed: nothing else may ever be issued under this CA.
gen_certs() {
  local c="$DIR/certs"
  rm -rf "$c"
  mkdir -p "$c"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 365 \
      -subj "/CN=oos-chat-controlplane-ca-$(openssl rand -hex 4)" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
      -subj "/CN=kube-apiserver" -keyout "$c/serving.key" -out "$c/serving.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$c/serving.ext"
    openssl x509 -req -sha256 -days 365 -in "$c/serving.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -extfile "$c/serving.ext" -out "$c/serving.crt" 2>/dev/null
  ) || die "could not create the CA and serving certificate (openssl)"
  rm -f "$c/ca.key" "$c/serving.csr" "$c/serving.ext"
  chmod 644 "$c/ca.crt"
}

is_ready() {
  pid_alive "$DIR/etcd.pid" etcd && pid_alive "$DIR/kube-apiserver.pid" kube-apiserver &&
    [[ "$(api_get /readyz 2>/dev/null)" == ok ]]
}

start_once() {
  local assets="$1"
  local etcd_port peer_port api_port
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
  [[ "$etcd_port" != "$peer_port" && "$etcd_port" != "$api_port" && "$peer_port" != "$api_port" ]] || return 1
  rm -rf "$DIR/etcd-data"
  mkdir -p "$DIR/etcd-data"
  echo "$api_port" >"$DIR/apiserver.port"
  spawn "$DIR/etcd.pid" "$DIR/etcd.log" "$assets/etcd" \
    --name default --data-dir "$DIR/etcd-data" --unsafe-no-fsync --log-level warn \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port"
  spawn "$DIR/kube-apiserver.pid" "$DIR/kube-apiserver.log" "$assets/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --secure-port "$api_port" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$DIR/certs/serving.crt" --tls-private-key-file "$DIR/certs/serving.key" \
    --token-auth-file "$DIR/tokens.csv" --authorization-mode RBAC \
    --enable-admission-plugins OwnerReferencesPermissionEnforcement \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$DIR/sa.key" --service-account-signing-key-file "$DIR/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --v 1

  local deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! pid_alive "$DIR/etcd.pid" etcd || ! pid_alive "$DIR/kube-apiserver.pid" kube-apiserver; then
      log "a process exited during startup"
      tail -n 5 "$DIR/etcd.log" "$DIR/kube-apiserver.log" >&2 || true
      stop_proc "$DIR/kube-apiserver.pid" kube-apiserver
      stop_proc "$DIR/etcd.pid" etcd
      return 1
    fi
    if [[ "$(api_get /readyz 2>/dev/null)" == ok ]] && api_get /api/v1/namespaces/default >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  log "not ready after ${READY_TIMEOUT} s"
  tail -n 20 "$DIR/kube-apiserver.log" >&2 || true
  stop_proc "$DIR/kube-apiserver.pid" kube-apiserver
  stop_proc "$DIR/etcd.pid" etcd
  die "control plane did not become ready"
}

write_kubeconfig() {
  local server="https://127.0.0.1:$(cat "$DIR/apiserver.port")"
  (
    umask 077
    cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: oos-chat-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$DIR/certs/ca.crt")
users:
- name: admin
  user:
    token: $(cat "$DIR/admin.token")
- name: developer
  user:
    token: $(cat "$DIR/developer.token")
contexts:
- name: admin
  context: {cluster: oos-chat-test, user: admin}
- name: developer
  context: {cluster: oos-chat-test, user: developer}
current-context: admin
EOF
  )
}

cmd_up() {
  parse_dir "$@"
  if [[ -f "$DIR/kubeconfig" ]] && is_ready; then
    log "already up in $DIR (Kubernetes $(cat "$DIR/version" 2>/dev/null || echo unknown))"
    echo "KUBECONFIG=$DIR/kubeconfig"
    return 0
  fi
  if [[ ! -f "$DIR/$MARKER" && -n "$(ls -A "$DIR")" ]]; then
    die "$DIR is not empty and not a control-plane state dir; refusing to use it"
  fi
  touch "$DIR/$MARKER"
  # Leftovers from a crashed run must not linger next to the new processes.
  stop_proc "$DIR/kube-apiserver.pid" kube-apiserver
  stop_proc "$DIR/etcd.pid" etcd

  local assets
  assets="$(cmd_build | tail -n 1)"
  command -v openssl >/dev/null || die "openssl is required"

  local start=$SECONDS
  (
    umask 077
    openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
    openssl rand -hex 32 >"$DIR/admin.token"
    openssl rand -hex 32 >"$DIR/developer.token"
    # token,user,uid,"groups": admin is a superuser via system:masters; developer only has
    # system:authenticated (added by the apiserver), for RBAC tests.
    printf '%s,admin,admin-uid,"system:masters"\n%s,developer,developer-uid\n' \
      "$(cat "$DIR/admin.token")" "$(cat "$DIR/developer.token")" >"$DIR/tokens.csv"
  )
  gen_certs
  echo "$K8S_VERSION" >"$DIR/version"
  local attempt
  for attempt in 1 2 3; do
    if start_once "$assets"; then
      write_kubeconfig
      log "ready in $((SECONDS - start)) s (etcd pid $(cat "$DIR/etcd.pid"), kube-apiserver pid $(cat "$DIR/kube-apiserver.pid"))"
      echo "KUBECONFIG=$DIR/kubeconfig"
      return 0
    fi
    log "start attempt $attempt failed, retrying with new ports"
  done
  die "could not start the control plane (logs in $DIR)"
}

cmd_down() {
  parse_dir "$@"
  # Apiserver first: stopped together, it keeps retrying a vanished etcd for a long time.
  stop_proc "$DIR/kube-apiserver.pid" kube-apiserver
  stop_proc "$DIR/etcd.pid" etcd
  if [[ -f "$DIR/$MARKER" ]]; then
    rm -rf "$DIR"
    log "stopped; removed $DIR"
  else
    log "nothing to remove in $DIR (not a control-plane state dir)"
    rmdir "$DIR" 2>/dev/null || true
  fi
}

cmd_status() {
  parse_dir "$@"
  local e=stopped a=stopped
  pid_alive "$DIR/etcd.pid" etcd && e="running (pid $(cat "$DIR/etcd.pid"))"
  pid_alive "$DIR/kube-apiserver.pid" kube-apiserver && a="running (pid $(cat "$DIR/kube-apiserver.pid"))"
  echo "etcd: $e"
  echo "kube-apiserver: $a"
  echo "version: $(cat "$DIR/version" 2>/dev/null || echo unknown)"
  if [[ -f "$DIR/kubeconfig" ]] && is_ready; then
    echo "ready: yes"
    echo "KUBECONFIG=$DIR/kubeconfig"
    return 0
  fi
  echo "ready: no"
  [[ -f "$DIR/$MARKER" ]] || rmdir "$DIR" 2>/dev/null || true
  return 1
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    build) cmd_build "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    version) echo "$K8S_VERSION" ;;
    versions) known_versions ;;
    *) echo "usage: $0 {build [kube-apiserver|etcd|kubectl|all]|up [--dir D]|down [--dir D]|status [--dir D]|version|versions}" >&2; exit 2 ;;
  esac
}

main "$@"
