#!/usr/bin/env bash
# The local federation on top of the embedded site (deploy/local/site.sh): two site
# sidecars on the local Slurm (local-a: partition debug, with data staging;
# local-b: partition batch) serving gRPC over TLS, and the gateway in front of them
# serving the interLink API the upstream Virtual Kubelet speaks, on a unix socket.
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
DAEMONS=(sidecar:sidecar.yaml sidecar-b:sidecar-b.yaml gateway:gateway.yaml)

log() { printf '[federation] %s\n' "$*" >&2; }
# shellcheck source=deploy/local/daemons.sh
source "$REPO/deploy/local/daemons.sh"

start_daemon() {  # start_daemon DIR CONFIG KIND
  local dir=$SITE/$1 config=$REPO/deploy/local/$2 kind=$3
  mkdir -p "$dir"
  if pid_alive "$dir/$kind.pid"; then log "$1 already running"; return; fi
  setsid "$BIN/interlink-provider" "$kind" --config "$config" >>"$dir/$kind.log" 2>&1 </dev/null &
  echo $! >"$dir/$kind.pid"
}

start() {
  [[ -s $SITE/devidp/ca.pem && -s $SITE/pki/host.pem ]] || { log "start the site first: deploy/local/site.sh start"; exit 1; }
  mkdir -p "$SITE/gateway"
  ( umask 077; printf 'gateway-secret\n' >"$SITE/gateway/client-secret" )   # deploy/local/devidp.yaml's demo secret
  local entry
  for entry in "${DAEMONS[@]}"; do
    local dir=${entry%%:*} config=${entry#*:}
    start_daemon "$dir" "$config" "$([[ $dir == gateway ]] && echo gateway || echo sidecar)"
  done
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
