#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for the tests that need one (tests/e2e/test_kubernetes.py):
# etcd, kube-apiserver, kube-scheduler and kube-controller-manager, plus kubectl and helm, all built
# here from their Go modules by name (the wrapper modules in deploy/local/k8s/*/go.mod pin the
# versions; no source is copied into this repository and no prebuilt binary is downloaded). The
# build runs once and is cached: it is skipped while the binaries match the wrapper modules.
# No kubelet runs (pods scheduled here stay Pending), and neither do interLink's Virtual Kubelet
# and API server: their Go modules are not served to this machine (README "Limitations").
#
#   deploy/local/k8s.sh build    build the binaries into $ILP_K8S_BUILD_DIR/bin (start does it too)
#   deploy/local/k8s.sh start    certificates, keys and kubeconfigs, then the daemons; waits for /readyz
#   deploy/local/k8s.sh stop     stop what `start` started (by PID files; idempotent)
#   deploy/local/k8s.sh status   each daemon, and the API server's /readyz
#   deploy/local/k8s.sh env      print `export KUBECONFIG=...` (the admin's) and PATH with kubectl and helm
#   deploy/local/k8s.sh pin VERSION   rewrite deploy/local/k8s/kubernetes/go.mod for another
#                                     k8s.io/kubernetes release (its staging modules' replace lines)
#
# The API server authorizes with Node,RBAC (the admin's client certificate is in system:masters;
# the scheduler and the controller-manager use their own certificates and RBAC's bootstrap roles)
# and keeps its default admission plugins: the ServiceAccount plugin needs the service accounts
# the controller-manager's serviceaccount controller makes. The controller-manager runs only the
# controllers these tests use (service accounts and their tokens, namespaces, garbage collection,
# Jobs, the root CA ConfigMap, node lifecycle). The node lifecycle controller takes off the
# not-ready taint the API server puts on a new node once the node reports Ready; its grace
# period is an hour (ILP_K8S_NODE_GRACE), as no kubelet heartbeats for the nodes tests make.
#
# Environment: ILP_K8S_DIR (runtime state: certificates, etcd's data, logs, PID files, kubeconfigs;
# default <repo>/.site/k8s), ILP_K8S_BUILD_DIR (binaries, GOMODCACHE and GOCACHE; default
# $ILP_K8S_DIR/build: point it at another checkout's to reuse its build), ILP_K8S_API_PORT (16443),
# ILP_K8S_ETCD_PORT (16379; the peer port is the next one), ILP_K8S_SCHEDULER_PORT (16459),
# ILP_K8S_CONTROLLER_MANAGER_PORT (16457), ILP_K8S_NODE_GRACE (1h). Everything listens on
# 127.0.0.1 only.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
K8S_DIR=${ILP_K8S_DIR:-$REPO/.site/k8s}
BUILD_DIR=${ILP_K8S_BUILD_DIR:-$K8S_DIR/build}
BIN=$BUILD_DIR/bin
MODULES=$REPO/deploy/local/k8s
PKI=$K8S_DIR/pki
LOGS=$K8S_DIR/logs
RUN=$K8S_DIR/run
API_PORT=${ILP_K8S_API_PORT:-16443}
ETCD_PORT=${ILP_K8S_ETCD_PORT:-16379}
ETCD_PEER_PORT=$(( ETCD_PORT + 1 ))
SCHEDULER_PORT=${ILP_K8S_SCHEDULER_PORT:-16459}
CONTROLLER_MANAGER_PORT=${ILP_K8S_CONTROLLER_MANAGER_PORT:-16457}
API_URL=https://127.0.0.1:$API_PORT
SERVICE_RANGE=10.0.0.0/24
SERVICE_IP=10.0.0.1   # the `kubernetes` Service's address in $SERVICE_RANGE
ISSUER=https://kubernetes.default.svc.cluster.local
KUBECONFIG_ADMIN=$K8S_DIR/admin.kubeconfig
NODE_GRACE=${ILP_K8S_NODE_GRACE:-1h}
CONTROLLERS=serviceaccount-token-controller,serviceaccount-controller,namespace-controller,garbage-collector-controller,job-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller
# Which module builds which program (the package path is the program's main package).
declare -A PROGRAMS=(
  [etcd]="kubernetes go.etcd.io/etcd/server/v3"
  [kube-apiserver]="kubernetes k8s.io/kubernetes/cmd/kube-apiserver"
  [kube-scheduler]="kubernetes k8s.io/kubernetes/cmd/kube-scheduler"
  [kube-controller-manager]="kubernetes k8s.io/kubernetes/cmd/kube-controller-manager"
  [kubectl]="kubernetes k8s.io/kubernetes/cmd/kubectl"
  [helm]="helm helm.sh/helm/v4/cmd/helm"
)
BUILD_ORDER=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)

log() { printf '[k8s] %s\n' "$*" >&2; }
# shellcheck source=deploy/local/daemons.sh
source "$REPO/deploy/local/daemons.sh"

go_env() {  # the Go environment of every build: caches under $BUILD_DIR, this machine's toolchain only
  export GOMODCACHE=$BUILD_DIR/gomod GOCACHE=$BUILD_DIR/gocache GOTOOLCHAIN=local
  export GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0
}

module_version() {  # module_version MODULE_DIR MODULE_PATH: the version the wrapper module requires
  sed -n "s|^[[:space:]]*\(require \)\{0,1\}$2 \(v[^ ]*\).*|\2|p" "$MODULES/$1/go.mod" | head -1
}

stamp_of() {  # what a binary was built from: its wrapper module's go.mod and go.sum, the link flags
  { cat "$MODULES/$1/go.mod" "$MODULES/$1/go.sum"; ldflags_for "$1"; } | sha256sum | cut -d' ' -f1
}

ldflags_for() {  # the version Kubernetes' own release build stamps into its binaries
  local module=$1 version major minor flags="-s -w" pkg
  if [[ $module == helm ]]; then
    version=$(module_version helm helm.sh/helm/v4)
    echo "$flags -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
    return
  fi
  version=$(module_version kubernetes k8s.io/kubernetes)
  major=${version#v}; major=${major%%.*}
  minor=${version#v"$major".}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  echo "$flags"
}

build() {
  local name module pkg stamp began seconds
  command -v go >/dev/null || { log "go is not installed: it builds the control plane (deploy/local/k8s/)"; return 1; }
  mkdir -p "$BIN"
  go_env
  for name in "${BUILD_ORDER[@]}"; do
    read -r module pkg <<<"${PROGRAMS[$name]}"
    stamp=$(stamp_of "$module")
    if [[ -x $BIN/$name && $(cat "$BIN/$name.stamp" 2>/dev/null) == "$stamp" ]]; then
      continue
    fi
    log "building $name ($pkg, $(go version | cut -d' ' -f3); the first build takes a while)"
    began=$(date +%s)
    (cd "$MODULES/$module" && nice go build -trimpath -ldflags "$(ldflags_for "$module")" -o "$BIN/$name.new" "$pkg")
    mv "$BIN/$name.new" "$BIN/$name"
    echo "$stamp" >"$BIN/$name.stamp"
    seconds=$(( $(date +%s) - began ))
    printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$name" "$seconds" >>"$BUILD_DIR/build-times.log"
    log "built $name in ${seconds}s"
  done
}

pin() {  # pin VERSION: the kubernetes wrapper module for another release of k8s.io/kubernetes
  local version=${1:?usage: k8s.sh pin vX.Y.Z} staging dir=$MODULES/kubernetes gomod
  go_env
  staging=v0.${version#v1.}
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  {
    sed -n '1,/^module /p' "$dir/go.mod"
    printf '\n%s\n\n' "$(grep -m1 '^go ' "$gomod")"
    printf 'require k8s.io/kubernetes %s\n\n' "$version"
    printf '// k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with its own\n'
    printf '// ./staging tree; a module depending on it names their published versions instead.\n'
    printf 'replace (\n'
    sed -n "s|^[[:space:]]*\\(k8s.io/[a-z0-9-]*\\) => ./staging/src/.*|\t\\1 => \\1 $staging|p" "$gomod"
    printf ')\n\n'
    sed -n '/^tool (/,/^)/p' "$dir/go.mod"
  } >"$dir/go.mod.new"
  mv "$dir/go.mod.new" "$dir/go.mod"
  (cd "$dir" && go mod tidy)
  log "deploy/local/k8s/kubernetes now builds k8s.io/kubernetes $version (staging modules $staging)"
}

sign() {  # sign NAME SUBJECT [EXTENSIONS [CA]]: a key and a certificate from a local CA (default: ca)
  local name=$1 subject=$2 ext=${3:-extendedKeyUsage=clientAuth} ca=${4:-ca}
  [[ -s $PKI/$name.crt ]] && return
  openssl req -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subject" 2>/dev/null
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -out "$PKI/$name.crt" -days 825 -extfile "$PKI/$name.ext" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

new_ca() {  # new_ca NAME SUBJECT: a self-signed CA, once
  [[ -s $PKI/$1.crt ]] && return
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -days 3650 -subj "$2" 2>/dev/null
}

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  new_ca ca "/CN=interlink-provider local Kubernetes CA"
  # The front proxy's own CA, as kubeadm makes it: the scheduler and the controller-manager read
  # it from the extension-apiserver-authentication ConfigMap and complain while it is missing.
  new_ca front-proxy-ca "/CN=interlink-provider local front-proxy CA"
  sign front-proxy-client "/CN=front-proxy-client" extendedKeyUsage=clientAuth front-proxy-ca
  sign apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
    "subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    "extendedKeyUsage=serverAuth")"
  sign admin "/O=system:masters/CN=kubernetes-admin"
  sign kube-scheduler "/CN=system:kube-scheduler"
  sign kube-controller-manager "/CN=system:kube-controller-manager"
  # The service-account token signing key: the API server signs with it (TokenRequest), the
  # controller-manager too (legacy token Secrets), and the API server verifies with its public half.
  if [[ ! -s $PKI/sa.key ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
}

write_kubeconfig() {  # write_kubeconfig FILE USER: a kubeconfig for the local API server as USER
  cat >"$1" <<CONF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $API_URL
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: local
  context:
    cluster: local
    user: $2
current-context: local
CONF
  chmod 600 "$1"
}

launch() {  # launch NAME ARGS...: $BIN/NAME in its own session, its log and PID file under $K8S_DIR
  local name=$1
  shift
  setsid "$BIN/$name" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

wait_healthy() {  # wait_healthy NAME URL SECONDS: until URL answers "ok" (and the daemon lives)
  local name=$1 url=$2 tenths=$(( $3 * 10 )) i
  for ((i = 0; i < tenths; i++)); do
    [[ $(curl -sk --max-time 2 "$url" 2>/dev/null) == ok ]] && return 0
    pid_alive "$RUN/$name.pid" || break
    sleep 0.1
  done
  log "$name is not healthy ($url); the end of $LOGS/$name.log:"
  tail -n 20 "$LOGS/$name.log" >&2
  return 1
}

start_etcd() {
  launch etcd --name local --data-dir "$K8S_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --quota-backend-bytes $(( 2 * 1024 * 1024 * 1024 ))
  # etcd's /health answers JSON, not "ok"
  local i
  for ((i = 0; i < 300; i++)); do
    curl -s --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' && return 0
    pid_alive "$RUN/etcd.pid" || break
    sleep 0.1
  done
  log "etcd did not start; the end of $LOGS/etcd.log:"
  tail -n 20 "$LOGS/etcd.log" >&2
  return 1
}

start_apiserver() {
  launch kube-apiserver --bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address 127.0.0.1 \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer "$ISSUER" --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --service-cluster-ip-range "$SERVICE_RANGE" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --endpoint-reconciler-type none --profiling=false
  # (no endpoint reconciler: the `kubernetes` Service's endpoints may not be a loopback address)
  wait_healthy kube-apiserver "$API_URL/readyz" 120
}

start_scheduler() {
  launch kube-scheduler --kubeconfig "$K8S_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$K8S_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$K8S_DIR/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false --profiling=false
  wait_healthy kube-scheduler "https://127.0.0.1:$SCHEDULER_PORT/healthz" 60
}

start_controller_manager() {
  launch kube-controller-manager --kubeconfig "$K8S_DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$K8S_DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$K8S_DIR/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" --leader-elect=false --profiling=false \
    --controllers "$CONTROLLERS" --use-service-account-credentials --node-monitor-grace-period "$NODE_GRACE" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt"
  wait_healthy kube-controller-manager "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" 60
}

wait_default_service_account() {  # pods can be made once the serviceaccount controller has run
  local i
  for ((i = 0; i < 300; i++)); do
    "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" -n default get serviceaccount default >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "no default service account after 30 s (see $LOGS/kube-controller-manager.log)"
  return 1
}

running() { pid_alive "$RUN/kube-apiserver.pid" && [[ $(curl -sk --max-time 2 "$API_URL/readyz") == ok ]]; }

start() {
  local name began
  build
  began=$(date +%s%N)
  mkdir -p "$LOGS" "$RUN"
  make_pki
  write_kubeconfig "$KUBECONFIG_ADMIN" admin
  write_kubeconfig "$K8S_DIR/kube-scheduler.kubeconfig" kube-scheduler
  write_kubeconfig "$K8S_DIR/kube-controller-manager.kubeconfig" kube-controller-manager
  pid_alive "$RUN/etcd.pid" || start_etcd
  pid_alive "$RUN/kube-apiserver.pid" || start_apiserver
  pid_alive "$RUN/kube-scheduler.pid" || start_scheduler
  pid_alive "$RUN/kube-controller-manager.pid" || start_controller_manager
  wait_default_service_account
  for name in etcd kube-apiserver kube-scheduler kube-controller-manager; do
    pid_alive "$RUN/$name.pid" || { log "$name is not running (see $LOGS/$name.log)"; return 1; }
  done
  log "Kubernetes $(module_version kubernetes k8s.io/kubernetes) up at $API_URL in $(( ($(date +%s%N) - began) / 1000000 )) ms"
  log "admin kubeconfig: $KUBECONFIG_ADMIN (deploy/local/k8s.sh env)"
}

stop() {
  stop_pidfile "$RUN/kube-controller-manager.pid" kube-controller-manager
  stop_pidfile "$RUN/kube-scheduler.pid" kube-scheduler
  stop_pidfile "$RUN/kube-apiserver.pid" kube-apiserver 10
  stop_pidfile "$RUN/etcd.pid" etcd 10
}

status() {
  local name
  for name in etcd kube-apiserver kube-scheduler kube-controller-manager; do
    if pid_alive "$RUN/$name.pid"; then echo "$name running ($(cat "$RUN/$name.pid"))"; else echo "$name stopped"; fi
  done
  if running; then echo "kube-apiserver ready ($API_URL)"; else echo "kube-apiserver not ready"; fi
}

print_env() {
  # shellcheck disable=SC2016  # $PATH is the one of the shell that evaluates these lines
  printf 'export KUBECONFIG=%q\nexport PATH=%q:"$PATH"\n' "$KUBECONFIG_ADMIN" "$BIN"
}

case ${1:-} in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  pin) pin "${2:-}" ;;
  *) echo "usage: $0 {build|start|stop|status|env|pin VERSION}" >&2; exit 2 ;;
esac
