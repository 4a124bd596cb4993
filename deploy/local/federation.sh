#!/usr/bin/env bash
# The local federation on top of the embedded site (deploy/local/site.sh): two site
# sidecars on the local Slurm (local-a: partition debug, with data staging;
# local-b: partition batch) serving gRPC over TLS, and the gateway in front of them
# serving the interLink API the upstream Virtual Kubelet speaks, on a unix socket.
# Nothing runs as root: the sidecars run as the site's service account (ilp) in the
# multi-account mode (`agents: {}`: each pod account's work is done by its own agent, started
# through the sudoers rule deploy/local/site.sh installs), the gateway as ilp-gatewayd. Their
# directories are made theirs here (a site whose daemons ran as root left them root's).
#
#   deploy/local/federation.sh start    start what is not running; wait until the gateway sees both sites
#   deploy/local/federation.sh stop
#   deploy/local/federation.sh status
#   deploy/local/federation.sh env      exports: ILP_GATEWAY (the VK's InterlinkURL), ILP_SIDECAR (local-a)
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
export ILP_SITE_DIR=${ILP_SITE_DIR:-$REPO/.site}
SITE=$ILP_SITE_DIR
BIN=${ILP_VENV:-$REPO/.venv}/bin
eval "$(bash "$REPO/deploy/local/site.sh" env)"   # SLURM_CONF and friends for the sidecars
SERVICE_ACCOUNT=${ILP_SERVICE_ACCOUNT:-ilp}
GATEWAY_ACCOUNT=ilp-gatewayd
USERS_GROUP=ilp-users

log() { printf '[federation] %s\n' "$*" >&2; }
# shellcheck source=deploy/local/daemons.sh
source "$REPO/deploy/local/daemons.sh"

own() {  # own ACCOUNT DIR...: the daemon's own directories and all in them become ACCOUNT's
  local account=$1 dir
  shift
  for dir in "$@"; do
    mkdir -p "$dir"
    find "$dir" ! -user "$account" -exec chown -h "$account:$account" {} +   # what a root daemon left
  done
}

shared_pods_root() {  # shared_pods_root DIR: the service account's, mode 1733 (each account makes its own directory)
  local root=$1 dir account
  mkdir -p "$root"
  chown "$SERVICE_ACCOUNT:$SERVICE_ACCOUNT" "$root"
  chmod 1733 "$root"
  # An account's part made by a root sidecar (one that handed pod directories over): the
  # account's own now, as its agent would have made it.
  for dir in "$root"/*/; do
    account=$(basename "$dir")
    id -nG "$account" 2>/dev/null | tr ' ' '\n' | grep -qx "$USERS_GROUP" || continue
    find "$dir" ! -user "$account" -exec chown -h "$account:$account" {} +
  done
}

content_cache() {  # content_cache DIR: the sidecar's alone (files 0600, directories 0711; ACLs add accounts)
  # A link there whose target is gone (a test's, into its own workdir: tests/helpers.py) is no cache.
  if [[ -L $1 && ! -e $1 ]]; then rm -f -- "$1"; fi
  mkdir -p "$1"
  # What a root sidecar left there (a whole cache, or a download it had under way) becomes the
  # service account's, with the modes it would have made; its own entries (and their ACLs) stay.
  find "$1" ! -user "$SERVICE_ACCOUNT" \( -type d -exec chmod 0711 {} + -o -type f -exec chmod 0600 {} + \)
  find "$1" ! -user "$SERVICE_ACCOUNT" -exec chown -h "$SERVICE_ACCOUNT:$SERVICE_ACCOUNT" {} +
}

start_daemon() {  # start_daemon DIR CONFIG KIND ACCOUNT
  local dir=$SITE/$1 config=$REPO/deploy/local/$2 kind=$3 account=$4
  if pid_alive "$dir/$kind.pid"; then log "$1 already running"; return; fi
  own "$account" "$dir"
  as_account "$account"
  setsid "${AS_ACCOUNT[@]}" "$BIN/interlink-provider" "$kind" --config "$config" >>"$dir/$kind.log" 2>&1 </dev/null &
  echo $! >"$dir/$kind.pid"
}

start() {
  [[ -s $SITE/devidp/ca.pem && -s $SITE/pki/$SERVICE_ACCOUNT/host.key ]] || { log "start the site first: deploy/local/site.sh start"; exit 1; }
  own "$GATEWAY_ACCOUNT" "$SITE/gateway"
  ( umask 077; printf 'gateway-secret\n' >"$SITE/gateway/client-secret" )   # deploy/local/devidp.yaml's demo secret
  chown "$GATEWAY_ACCOUNT:$GATEWAY_ACCOUNT" "$SITE/gateway/client-secret"
  shared_pods_root "$SITE/pods"
  shared_pods_root "$SITE/pods-b"
  content_cache "$SITE/stage-cache"
  start_daemon sidecar sidecar.yaml sidecar "$SERVICE_ACCOUNT"
  start_daemon sidecar-b sidecar-b.yaml sidecar "$SERVICE_ACCOUNT"
  start_daemon gateway gateway.yaml gateway "$GATEWAY_ACCOUNT"
  local i
  for ((i = 0; i < 300; i++)); do
    if "$BIN/interlink-provider" gateway --config "$REPO/deploy/local/gateway.yaml" --health 2>/dev/null \
        | grep -c ': up' | grep -qx 2; then
      log "gateway up on unix://$SITE/gateway/gateway.sock, sites local-a (debug) and local-b (batch)"
      return
    fi
    sleep 0.2
  done
  log "the gateway did not reach both sites:"
  "$BIN/interlink-provider" gateway --config "$REPO/deploy/local/gateway.yaml" --health >&2 || true
  tail -n 5 "$SITE"/{sidecar,sidecar-b,gateway}/*.log >&2 || true
  exit 1
}

stop() {
  local entry
  for entry in gateway:gateway sidecar-b:sidecar sidecar:sidecar; do
    stop_pidfile "$SITE/${entry%%:*}/${entry#*:}.pid" "${entry%%:*}" 10
  done
}

status() {
  local entry
  for entry in sidecar:sidecar sidecar-b:sidecar gateway:gateway; do
    local file=$SITE/${entry%%:*}/${entry#*:}.pid
    pid_alive "$file" && echo "${entry%%:*} running ($(cat "$file"))" || echo "${entry%%:*} stopped"
  done
  "$BIN/interlink-provider" gateway --config "$REPO/deploy/local/gateway.yaml" --health 2>&1 || true
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) printf 'export ILP_GATEWAY=%q\nexport ILP_SIDECAR=%q\n' "unix://$SITE/gateway/gateway.sock" \
       "unix://$SITE/sidecar/sidecar.sock" ;;
  *) echo "usage: $0 {start|stop|status|env}" >&2; exit 2 ;;
esac
