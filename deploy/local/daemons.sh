# Daemons started by hand and stopped by their PID files: shared by site.sh and
# federation.sh (sourced; the caller defines `log`).

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {  # stop_pidfile FILE NAME [GRACE_SECONDS]: SIGTERM, then SIGKILL after the grace
  local file=$1 name=$2 tenths=$(( ${3:-5} * 10 )) i pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < tenths; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $name ($pid)"
  fi
  rm -f "$file"
}
