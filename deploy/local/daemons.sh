# Daemons started by hand and stopped by their PID files: shared by site.sh and
# federation.sh (sourced; the caller defines `log`).

# as_account ACCOUNT: sets AS_ACCOUNT to the words that run a command as ACCOUNT (its groups too,
# its home and names in the environment), nothing of root kept. setpriv becomes the command, and
# env does too, so a PID file names the daemon itself and a SIGTERM reaches it (runuser would
# stay a root parent, and kill the daemon 2 s after passing the signal on).
as_account() {
  local home
  home=$(getent passwd "$1" | cut -d: -f6)
  AS_ACCOUNT=(setpriv --reuid="$1" --regid="$(id -g "$1")" --init-groups --
              env HOME="${home:-/nonexistent}" USER="$1" LOGNAME="$1")
}

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
