# ---- the runner's library ------------------------------------------------------
# Static: included verbatim into every job script (sidecars/core/kits/templates/runner/lib.sh).
# It only defines functions; the per-pod partials define what it expects:
#   variables      ILP_POD_DIR ILP_PODS_ROOT ILP_SELF (this script) ILP_GRACE (seconds)
#                  ILP_POD_NAME ILP_POD_HOSTNAME (the containers' hostname: at most 63 characters)
#                  ILP_SANDBOX (sandbox executable) ILP_RESTART_BACKOFF (seconds)
#                  ILP_NAMES (container names by index) ILP_INIT ILP_APPS (indexes, in order)
#                  ILP_PASS_NAMES (site variables passed to containers)
#   per container  ILP_POLICY[I] (restartPolicy) ILP_HOOKS[I] ("postStart,preStop", or less)
#                  ILP_HAS_STARTUP[I] ILP_HAS_READINESS[I] ILP_GATED[I] (1 or 0)
#                  ilp_prepare_I  fetch/unpack the image (output to the container's log)
#                  ilp_mounts_I   check subPath mounts (ilp_source)
#                  ilp_run_I      run the container (ilp_passthrough, then the runtime)
#                  ilp_exec_I ARGV...        run a command in the container
#                  ilp_hook_I_NAME           postStart / preStop handler
#                  ilp_check_I_KIND          startup / liveness / readiness check
#                  ilp_probes_I              start the probe loops: ILP_PROBES <- pids
#   per pod        ilp_pre_exec   run before the first container (may be `:`)
# The script ends with `ilp_entry "$@"`: the job itself, or the runner calling itself
# (job.sh __runner I, __exec_main I, __hook I NAME, __check I KIND, __exec I ARGV...).

# ---- state files, events, logs -------------------------------------------------
ilp_now() {  # ILP_NOW <- current time, RFC 3339 with nanoseconds, without forking
  local t=$EPOCHREALTIME
  printf -v ILP_NOW '%(%Y-%m-%dT%H:%M:%S)T.%s000Z' "${t%.*}" "${t#*.}"
}
ilp_put() {  # atomic write of one small state file
  printf '%s\n' "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}
ilp_event() {  # runner events go to the scheduler's output file
  ilp_now
  printf '%s [interlink-provider] %s\n' "$ILP_NOW" "$*" >&2
}
ilp_stamp() {  # timestamps every line of a container's output
  trap '' TERM INT  # (SIG_IGN is kept across exec)
  if command -v perl >/dev/null 2>&1; then  # 15x the lines/s of the loop below (22,000/s: it throttled chatty pods)
    exec perl -MTime::HiRes=gettimeofday -MPOSIX=strftime -e '$| = 1;
      while (my $line = <STDIN>) {
        my ($s, $us) = gettimeofday;
        $line .= "\n" unless $line =~ /\n\z/;
        print strftime("%Y-%m-%dT%H:%M:%S", gmtime $s), sprintf(".%06d000Z ", $us), $line;
      }'
  fi
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    ilp_now
    printf '%s %s\n' "$ILP_NOW" "$line"
  done
}
ilp_cdir() { ILP_CDIR="$ILP_POD_DIR/containers/${ILP_NAMES[$1]}"; }
ilp_running() {  # container I started and has not exited
  ilp_cdir "$1"
  [[ -e $ILP_CDIR/started_at && ! -e $ILP_CDIR/exit_code ]]
}
ilp_wait_pid() {  # wait for a child even when traps interrupt `wait`
  local rc
  while :; do
    wait "$1"; rc=$?
    kill -0 "$1" 2>/dev/null || return "$rc"
  done
}
ilp_passthrough() {  # ILP_PASS <- "PREFIX""NAME=value" words for the site variables that are set
  local prefix=$1 flag=$2 name
  ILP_PASS=()
  for name in "${ILP_PASS_NAMES[@]}"; do
    [[ -n ${!name+x} ]] || continue
    [[ -n $flag ]] && ILP_PASS+=("$flag")
    ILP_PASS+=("$prefix$name=${!name}")
  done
}

# ---- mounts, probe and hook handlers -------------------------------------------
ilp_source() {  # ilp_source VOLUME_DIR SUBPATH CREATE: the bind source of a subPath mount
  local root=$1 sub=$2 create=$3 real_root real
  real_root=$(realpath -e -- "$root") || return 1
  if [[ $create == 1 && ! -e $root/$sub ]]; then mkdir -p -- "$root/$sub" || return 1; fi
  real=$(realpath -e -- "$root/$sub") || { echo "subPath $sub does not exist" >&2; return 1; }
  # A container may have planted a symlink: never follow it out of the volume.
  [[ $real == "$real_root" || $real == "$real_root"/* ]] || {
    echo "subPath $sub resolves outside its volume" >&2; return 1; }
}
ilp_in_dir() {  # host runtime: run a command in a directory
  mkdir -p -- "$1" && cd -- "$1" && shift && exec "$@"
}
ilp_http() {  # ilp_http SCHEME HOST PORT PATH [HEADER...]: success on HTTP 2xx/3xx
  local scheme=$1 host=$2 port=$3 path=$4 status header
  shift 4
  if [[ $scheme == HTTPS ]]; then
    local -a hdr=()
    for header in "$@"; do hdr+=(-H "$header"); done
    status=$(curl -ks -o /dev/null -w '%{http_code}' "${hdr[@]}" "https://$host:$port$path") || return 1
  else
    exec 3<>"/dev/tcp/$host/$port" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\nUser-Agent: kube-probe/interlink-provider\r\n' \
      "$path" "$host" "$port" >&3
    for header in "$@"; do printf '%s\r\n' "$header" >&3; done
    printf '\r\n' >&3
    IFS=' ' read -r _ status _ <&3
    cat <&3 >/dev/null  # read the whole answer, as the kubelet does, before closing
    exec 3<&-
  fi
  [[ $status =~ ^[0-9]+$ ]] && (( status >= 200 && status < 400 ))
}
ilp_tcp() { exec 3<>"/dev/tcp/$1/$2" && exec 3<&-; }

# ---- the sandbox runtime (bubblewrap) ------------------------------------------
ilp_root_args() {  # ROOTFS DIR: the host's root, read-only, split where a mount point must be created
  local rootfs=$1 dir=$2 entry
  for entry in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
    [[ -e $entry || -L $entry ]] || continue
    case $entry in /proc|/dev|/sys|/tmp|/run|/root) continue ;; esac
    if [[ -L $entry ]]; then
      # made in the container's own root, once: a hook's sandbox may start concurrently
      [[ -L $rootfs$entry ]] || ln -s -- "$(readlink -- "$entry")" "$rootfs$entry" 2>/dev/null
    elif [[ -d $entry ]] && ilp_needs_split "$entry"; then
      mkdir -p -- "$rootfs$entry"
      ilp_root_args "$rootfs" "$entry"
    else
      ILP_ARGS+=(--ro-bind "$entry" "$entry")
    fi
  done
}
ilp_needs_split() {  # some mount point below $1 does not exist on the host
  local target
  for target in "${ILP_TARGETS[@]}"; do
    [[ $target == "$1"/* && ! -e $target ]] && return 0
  done
  return 1
}
ilp_sandbox() {  # ilp_sandbox ROOTFS GPU BWRAP_ARGS... -- COMMAND...
  local rootfs=$1 gpu=$2 target
  shift 2
  local -a mounts=()
  ILP_TARGETS=()
  while (( $# )) && [[ $1 != -- ]]; do
    case $1 in
      --bind|--ro-bind|--dev-bind)
        target=$(realpath -m -- "$3")
        mounts+=("$1" "$2" "$target"); ILP_TARGETS+=("$target"); shift 3 ;;
      --tmpfs|--dir)
        target=$(realpath -m -- "$2")
        mounts+=("$1" "$target"); ILP_TARGETS+=("$target"); shift 2 ;;
      --chdir)
        target=$(realpath -m -- "$2")
        mounts+=(--dir "$target" --chdir "$target"); ILP_TARGETS+=("$target"); shift 2 ;;
      *) echo "ilp_sandbox: unexpected argument $1" >&2; return 125 ;;
    esac
  done
  shift
  mkdir -p -- "$rootfs/tmp" "$rootfs/root" && chmod 1777 "$rootfs/tmp" || return 125
  ILP_ARGS=(--bind "$rootfs" / --unshare-pid --unshare-ipc --unshare-uts
            --hostname "$ILP_POD_HOSTNAME" --die-with-parent)
  ilp_root_args "$rootfs" ""
  ILP_ARGS+=(--proc /proc --ro-bind /sys /sys --tmpfs /run --tmpfs "$ILP_PODS_ROOT")
  if [[ $gpu == 1 ]]; then ILP_ARGS+=(--dev-bind /dev /dev); else ILP_ARGS+=(--dev /dev); fi
  # bwrap forwards no signal, and its death (--die-with-parent) SIGKILLs the whole sandbox: it
  # ignores TERM, so a stop's TERM reaches the container's processes (which get the default
  # disposition back from `env --default-signal` inside) and only the final KILL ends bwrap.
  exec env --ignore-signal=TERM "$ILP_SANDBOX" "${ILP_ARGS[@]}" "${mounts[@]}" -- "$@"
}

# charliecloud runtime: the pod's image from the site's cache (interlink_provider/runtimes/charliecloud.py)
ilp_pinned() {  # PIN: the sidecar pinned this container's image before submitting the job
  [[ -r $1 ]] && return 0
  echo "no image pinned for this container ($1): the site's image cache is not reachable here" >&2
  return 1
}
ilp_pin_name() { ILP_PIN_NAME=${1##*/}; ILP_PIN_NAME=${ILP_PIN_NAME%.sh}; }  # PIN -> container name
ilp_pin_argv() {  # MODE WORDS...: ILP_ARGV <- the container's process by Kubernetes' rule (pin sourced)
  case $1 in  # interlink_provider/images/command.py; the pod's words: all of them, its args, or none
    command) ILP_ARGV=("${@:2}") ;;
    args) ILP_ARGV=("${ILP_IMAGE_ENTRYPOINT[@]}" "${@:2}") ;;
    *) ILP_ARGV=("${ILP_IMAGE_ENTRYPOINT[@]}" "${ILP_IMAGE_CMD[@]}") ;;
  esac
  (( ${#ILP_ARGV[@]} )) && return 0
  echo "no command specified: neither the container nor its image names one" >&2
  return 128
}
ilp_image_env() {  # ILP_ENV <- what an image's process starts with: defaults, the image's Env, then $@
  ILP_ENV=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "HOME=/root"
           "${ILP_IMAGE_ENV[@]}" "$@")
}
ilp_charliecloud() {  # PIN MODE WORKDIR [--fuse PROGRAM] [--bind|--ro-bind SRC DST | --mask GLOB]... -- NAME=VALUE... -- WORDS...
  local pin=$1 mode=$2 workdir=$3 scratch pid rc device fuse=
  shift 3
  local -a binds=() env=() argv=()
  while (( $# )) && [[ $1 != -- ]]; do
    case $1 in
      --fuse) fuse=$2; shift 2 ;;
      --bind|--ro-bind) binds+=("$1" "$2" "$3"); shift 3 ;;
      --mask)  # the devices there are on this node (GPUs the container did not ask for)
        while IFS= read -r device; do binds+=(--mask /dev/null "$device"); done < <(compgen -G "$2")
        shift 2 ;;
      *) echo "ilp_charliecloud: unexpected argument $1" >&2; return 125 ;;
    esac
  done
  shift
  while (( $# )) && [[ $1 != -- ]]; do env+=("$1"); shift; done
  shift
  # shellcheck source=/dev/null
  source -- "$pin" || return 125
  ilp_pin_argv "$mode" "$@" || return
  argv=("${ILP_ARGV[@]}")
  [[ -n $workdir ]] || workdir=${ILP_IMAGE_WORKDIR:-/}
  ilp_image_env "${env[@]}"
  if [[ -n $fuse ]]; then
    fuse=$(command -v -- "$fuse") ||
      { echo "fuse-overlayfs: no such program on $(hostname) (runtime.charliecloud.fuse_overlayfs)" >&2; return 126; }
    ilp_fuse_open fuse-overlayfs || return
  fi
  # The writable layer: node-local, private, gone with the container (a restart starts clean).
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/ilp-ch.XXXXXX") || return 125
  ilp_pin_name "$pin"
  ilp_put "$ILP_POD_DIR/containers/$ILP_PIN_NAME/ch_scratch" "$scratch"
  trap ':' TERM INT
  # A fresh bash runs ilp_ch_root: nothing of this script's own environment reaches the container.
  env -i "${ILP_PASS[@]}" "${ILP_ENV[@]}" USER="$(id -un)" \
    "$(command -v unshare)" -Urmu --propagation private -- "$BASH" -c "$(declare -f ilp_ch_root)"'; ilp_ch_root "$@"' \
    ilp-ch-root "$scratch" "$ILP_IMAGE_ROOTFS" "$workdir" "$ILP_POD_HOSTNAME" "$fuse" "${binds[@]}" -- \
    "$(command -v "$ILP_CHRUN")" -w -t --no-passwd -u "$ILP_IMAGE_UID" -g "$ILP_IMAGE_GID" -c "$workdir" \
    "$scratch/root" -- "${argv[@]}" &
  pid=$!
  ilp_put "$ILP_POD_DIR/containers/$ILP_PIN_NAME/ch_pid" "$pid"
  ilp_wait_pid "$pid"; rc=$?
  # fuse-overlayfs outlives the container (it keeps the namespaces alive): ended with it.
  [[ -n $fuse ]] && ilp_ch_fuse_stop "$scratch"
  chmod -R u+rwX -- "$scratch" 2>/dev/null; rm -rf -- "$scratch"
  return "$rc"
}
ilp_fuse_open() {  # WHO: 126, said in the container's log, unless /dev/fuse is open to this account
  [[ -r /dev/fuse && -w /dev/fuse ]] && return 0
  echo "/dev/fuse is not open to $(id -un) on $(hostname): $1 needs it (mode 0666, as udev makes it)" >&2
  return 126
}
ilp_ch_fuse_pid() {  # SCRATCH: the pid of the fuse-overlayfs serving this writable layer, while it runs
  local pid cmdline
  pid=$(cat -- "$1/fuse_pid" 2>/dev/null) || return 1
  # Only that very process: its command line names this layer (a pid may have been reused).
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"upperdir=$1/upper,"* ]] && echo "$pid"
}
ilp_ch_fuse_stop() {  # SCRATCH: TERM the fuse-overlayfs serving this writable layer, once it is gone
  local pid waited=0
  pid=$(ilp_ch_fuse_pid "$1") || return 0
  kill -TERM "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null && (( waited++ < 50 )); do sleep 0.1; done
}
ilp_ch_root() {  # SCRATCH ROOTFS WORKDIR HOSTNAME FUSE {--bind|--ro-bind|--mask SRC DST}... -- CH-RUN...: as root of our own namespaces
  local scratch=$1 lower=$2 workdir=$3 name=$4 fuse=$5 upper=$1/upper root=$1/root flag source target path=$PATH
  shift 5
  PATH=/usr/sbin:/usr/bin:/sbin:/bin  # the host's tools; the container's PATH is back for ch-run
  mkdir -p -- "$upper" "$scratch/work" "$root" || exit 125
  # Mount points and the working directory are made in the writable layer before it is mounted:
  # the image's own directories belong to the cache's account, not writable from here, and a
  # symbolic link of the image on the way is shadowed, never followed out of the container.
  local -a binds=()
  while (( $# )) && [[ $1 != -- ]]; do
    binds+=("$1" "$2" "$3")
    if [[ $1 == --mask ]]; then
      :  # a host device, covered before ch-run binds the host's /dev
    elif [[ -d $2 ]]; then
      mkdir -p -- "$upper$3"
    else
      mkdir -p -- "$upper$(dirname -- "$3")" && { [[ -e $upper$3 ]] || : >"$upper$3"; }
    fi || exit 125
    shift 3
  done
  shift
  mkdir -p -- "$upper$workdir" || exit 125  # the kubelet creates a missing workingDir
  # ch-run's own mount points, which a minimal image (FROM scratch) may lack
  mkdir -p -- "$upper/dev" "$upper/proc" "$upper/sys" "$upper/tmp" "$upper/etc" "$upper/home" || exit 125
  if [[ -n $fuse ]]; then
    # fuse-overlayfs shows every file of the image as ours (squash_to_root), so the container may
    # change the image's files too (copied up into its layer), as under a kubelet; the kernel's
    # overlayfs leaves them to the cache's account, which is nobody here.
    # Its chatter (options it ignores) is not the container's output: shown only when it fails.
    "$fuse" -o "lowerdir=$lower,upperdir=$upper,workdir=$scratch/work,squash_to_root" "$root" 2>"$scratch/fuse.err" ||
      { cat -- "$scratch/fuse.err" >&2; exit 125; }
    for flag in /proc/[0-9]*; do  # its daemon: the process whose command line names this layer
      [[ -O $flag && $(tr '\0' ' ' 2>/dev/null <"$flag/cmdline") == *"upperdir=$upper,"* ]] &&
        { echo "${flag#/proc/}" >"$scratch/fuse_pid"; break; }
    done
  else
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$scratch/work" "$root" || exit 125
  fi
  set -- "${binds[@]}" -- "$@"
  while [[ $1 != -- ]]; do
    flag=$1 source=$2 target=$3
    shift 3
    if [[ $flag == --mask ]]; then  # on the host's /dev, which ch-run then binds whole into the container
      if [[ -d $target ]]; then mount -t tmpfs -o ro none "$target"; else mount --bind /dev/null "$target"; fi || exit 125
      continue
    fi
    target=$root$target
    mount --bind -- "$source" "$target" || exit 125
    if [[ $flag == --ro-bind ]]; then mount -o remount,bind,ro -- "$target" || exit 125; fi
  done
  shift
  hostname -- "$name" 2>/dev/null
  PATH=$path
  exec "$@"
}
ilp_ch_started() {  # PID: the process runs the container's program, no longer one of ours that start it
  local exe=/proc/$1/exe tool
  if [[ ! -e $exe ]]; then
    # A program on fuse-overlayfs' mount is not ours to stat from outside the container's user
    # namespace (FUSE refuses): that is the image's program, while our tools are the host's. A
    # process that has ended has no link to read.
    [[ -L $exe && -n $(readlink -- "$exe" 2>/dev/null) ]]
    return
  fi
  for tool in "$BASH" "$(command -v env)" "$(command -v unshare)" "$(command -v "$ILP_CHRUN")"; do
    [[ $exe -ef $tool ]] && return 1
  done
  return 0
}
ilp_charliecloud_exec() {  # PIN NAME=VALUE... -- COMMAND...: in the running container's namespaces
  local pin=$1 pid cwd waited=0
  shift
  local -a env=()
  while (( $# )) && [[ $1 != -- ]]; do env+=("$1"); shift; done
  shift
  # shellcheck source=/dev/null
  source -- "$pin" || return 125
  ilp_pin_name "$pin"
  # Until ch-run has handed over to the container's program, there is nothing to join.
  while :; do
    pid=$(cat -- "$ILP_POD_DIR/containers/$ILP_PIN_NAME/ch_pid" 2>/dev/null) && ilp_ch_started "$pid" && break
    (( waited++ < 300 )) || { echo "container ${ILP_PIN_NAME} is not running" >&2; return 126; }
    sleep 0.1
  done
  ilp_image_env "${env[@]}"
  # Its working directory by name, entered from inside: on fuse-overlayfs' mount the directory
  # itself is not ours to open from out here (nsenter -w would).
  cwd=$(readlink -- "/proc/$pid/cwd") && [[ $cwd == /* ]] || cwd=/
  ilp_ch_outer "$ILP_POD_DIR/containers/$ILP_PIN_NAME/ch_scratch"
  env -i "${ILP_PASS[@]}" "${ILP_ENV[@]}" "${ILP_OUTER[@]}" "$(command -v nsenter)" -t "$pid" -U -m \
    --preserve-credentials --wdns="$cwd" -- "$@"
}
ilp_ch_outer() {  # SCRATCH_FILE: ILP_OUTER <- nsenter's words into our outer namespaces, where the hostname is
  # ch-run's user namespace is a child of ours (unshare -U), which owns the pod's UTS namespace:
  # joined from the child, the UTS namespace would refuse us. So our own user and UTS namespaces
  # are entered first, through the fuse daemon that lives in them, and ch-run's from there.
  # Without fuse-overlayfs no process is left in them: the command sees the node's hostname.
  local scratch fuse
  ILP_OUTER=()
  scratch=$(cat -- "$1" 2>/dev/null) && fuse=$(ilp_ch_fuse_pid "$scratch") || return 0
  ILP_OUTER=("$(command -v nsenter)" -t "$fuse" -U -u --preserve-credentials --)
}

# apptainer/singularity and enroot with image_cache on: the pinned image, no registry on the node
# (interlink_provider/runtimes/apptainer.py, enroot.py). Lists come counted: N WORD(N)...
ilp_counted() {  # ILP_LIST <- the N words after N; ILP_TAKEN <- how many words that was, N included
  ILP_LIST=("${@:2:$1}")
  ILP_TAKEN=$(( $1 + 1 ))
}
ilp_apptainer() {  # PIN EXE ENV_PREFIX MODE WORKDIR N OPTION... M NAME=VALUE... WORDS...
  local pin=$1 exe=$2 prefix=$3 mode=$4 workdir=$5 word
  shift 5
  ilp_counted "$@"; local -a options=("${ILP_LIST[@]}"); shift "$ILP_TAKEN"
  ilp_counted "$@"; local -a env=("${ILP_LIST[@]}"); shift "$ILP_TAKEN"
  # shellcheck source=/dev/null
  source -- "$pin" || return 125
  ilp_pin_argv "$mode" "$@" || return
  # The image's Env, then the pod's: the later word wins in env(1). No PATH/HOME defaults, unlike
  # ilp_image_env for ch-run's empty environment: apptainer sets its own where the image has none.
  local -a vars=()
  for word in "${ILP_IMAGE_ENV[@]}" "${env[@]}"; do vars+=("$prefix$word"); done
  # An unpacked image has no runscript: always exec, from the image's directory (a sandbox image).
  env "${ILP_PASS[@]}" "${vars[@]}" "$exe" exec "${options[@]}" --pwd "${workdir:-${ILP_IMAGE_WORKDIR:-/}}" \
    "$ILP_IMAGE_ROOTFS" "${ILP_ARGV[@]}"
}
ilp_enroot_root() {  # PIN DATA NAME RC: the container's root, a copy of the pinned rootfs, and its rc
  local pin=$1 data=$2 name=$3 rc=$4
  # shellcheck source=/dev/null
  source -- "$pin" || return 1
  if [[ -e $data/$name ]]; then
    chmod -R u+rwX -- "$data/$name" 2>/dev/null
    rm -rf -- "${data:?}/${name:?}" || return 1
  fi
  mkdir -p -- "$data" || return 1
  # Files of the image that the pod's account may not read (such as /etc/shadow) are left out, and
  # cp names them in the container's log; its directories become ours to remove with the pod.
  cp -a -- "$ILP_IMAGE_ROOTFS" "$data/$name"
  [[ -d $data/$name ]] || { echo "cannot copy the image's rootfs to $data/$name" >&2; return 1; }
  find "$data/$name" -type d ! -perm -u=rwx -exec chmod u+rwx -- {} + || return 1
  # enroot's command script: its parameters are the words after the container's name.
  # shellcheck disable=SC2016  # its words are expanded by the container's shell
  printf '%s\n' 'mkdir -p -- "$1" 2>/dev/null' 'cd -- "$1" || exit 128' 'shift' 'exec "$@"' >"$rc"
}
ilp_enroot() {  # PIN EXE DATA NAME RC MODE WORKDIR N OPTION... M NAME=VALUE... WORDS...
  local pin=$1 exe=$2 data=$3 name=$4 rc=$5 mode=$6 workdir=$7 word
  shift 7
  ilp_counted "$@"; local -a options=("${ILP_LIST[@]}"); shift "$ILP_TAKEN"
  ilp_counted "$@"; local -a env=("${ILP_LIST[@]}"); shift "$ILP_TAKEN"
  # shellcheck source=/dev/null
  source -- "$pin" || return 125
  ilp_pin_argv "$mode" "$@" || return
  local -a vars=()  # the site's variables (ILP_PASS), the image's Env, the pod's: the last one wins
  for word in "${ILP_IMAGE_ENV[@]}" "${env[@]}"; do vars+=(--env "$word"); done
  ENROOT_DATA_PATH=$data "$exe" start --rc "$rc" "${options[@]}" "${ILP_PASS[@]}" "${vars[@]}" -- \
    "$name" "${workdir:-${ILP_IMAGE_WORKDIR:-/}}" "${ILP_ARGV[@]}"
}

# podman runtime: the pinned rootfs, run rootless by podman as the pod's account
# (interlink_provider/runtimes/podman.py). Each container has podman state of its own in node-local
# temporary space (storage, run root, XDG_RUNTIME_DIR and so its pause process), removed after it.
ilp_podman_cmd() {  # STATE EXE GLOBAL...: ILP_PODMAN <- the podman command of this container's state
  local state=$1 exe=$2
  shift 2
  # HOME and XDG_RUNTIME_DIR in the state: nothing of the account's own podman set-up is read or
  # written, and the rootless pause process belongs to this container alone.
  ILP_PODMAN=(env "HOME=$state/home" "XDG_RUNTIME_DIR=$state/xdg" "$exe" --root "$state/root"
              --runroot "$state/run" "$@")
}
ilp_podman_stop() {  # NAME: TERM the container, KILL it once the grace period is nearly over
  local grace=$(( ${ILP_GRACE:-30} > 2 ? ${ILP_GRACE:-30} - 1 : 1 ))
  # In a session of its own: the runner's KILL of this process group must not cut it short.
  setsid "${ILP_PODMAN[@]}" stop --time "$grace" "$1" >/dev/null 2>&1 </dev/null &
}
ilp_podman_clean() {  # STATE NAME: the container, its storage, its pause process, the state
  local state=$1 pause
  "${ILP_PODMAN[@]}" rm --force --time 0 "$2" >/dev/null 2>&1
  # Files of the container's other users belong to subordinate ids: removed in its user namespace.
  "${ILP_PODMAN[@]}" unshare rm -rf -- "$state/root" "$state/run" >/dev/null 2>&1
  pause=$(cat -- "$state/xdg/libpod/tmp/pause.pid" 2>/dev/null) && kill -KILL "$pause" 2>/dev/null
  rm -rf -- "$state" 2>/dev/null
}
ilp_podman_finish() {  # STATE NAME: the clean-up, in a session of its own (the runner's KILL at the
  # end of the grace period must not leave the container's state and pause process behind)
  rm -f -- "$ILP_POD_DIR/containers/$ILP_PIN_NAME/podman_state"
  setsid "$BASH" -c "$(declare -f ilp_podman_clean)"'; state=$1 name=$2; shift 2; ILP_PODMAN=("$@")
    ilp_podman_clean "$state" "$name"' ilp-podman-clean "$1" "$2" "${ILP_PODMAN[@]}" </dev/null >/dev/null 2>&1 &
  ilp_wait_pid $!
}
ilp_podman_workdir() {  # STATE WORKDIR OPTION...: ILP_WORKDIR_MOUNT <- what makes a missing workdir
  # podman refuses a working directory the rootfs lacks; the kubelet creates it in the writable
  # layer. An empty directory of the container's state stands for it (gone with the container),
  # unless a volume holds it (podman makes the mount points) or the image has it.
  local state=$1 workdir=$2 target
  shift 2
  ILP_WORKDIR_MOUNT=()
  [[ -d $ILP_IMAGE_ROOTFS$workdir || -L $ILP_IMAGE_ROOTFS$workdir ]] && return 0
  [[ $workdir == *:* ]] && return 0  # no -v target (an image's WorkingDir): podman says it is missing
  while (( $# )); do
    if [[ $1 == -v ]]; then
      target=${2#*:}; target=${target%:ro}
      [[ $workdir == "$target" || $workdir == "$target"/* ]] && return 0
      shift
    fi
    shift
  done
  mkdir -p -- "$state/workdir" || return 1
  ILP_WORKDIR_MOUNT=(-v "$state/workdir:$workdir")
}
ilp_podman() {  # PIN EXE NAME MODE WORKDIR N GLOBAL... N OPTION... N DEVICE-GLOB... M NAME=VALUE... WORDS...
  local pin=$1 exe=$2 name=$3 mode=$4 workdir=$5 state pid rc word device
  shift 5
  local -a global options devices=() vars=() user
  # TERM (a delete, a failed probe or hook) may come at any moment, even before podman runs.
  ILP_PODMAN_STOPPING=0 ILP_PODMAN=()
  trap 'ILP_PODMAN_STOPPING=1; (( ${#ILP_PODMAN[@]} )) && ilp_podman_stop "$name"' TERM INT
  ilp_counted "$@"; global=("${ILP_LIST[@]}"); shift "$ILP_TAKEN"
  ilp_counted "$@"; options=("${ILP_LIST[@]}"); shift "$ILP_TAKEN"
  ilp_counted "$@"
  for word in "${ILP_LIST[@]}"; do  # the GPU devices there are on this node
    while IFS= read -r device; do devices+=(--device "$device"); done < <(compgen -G "$word")
  done
  shift "$ILP_TAKEN"
  ilp_counted "$@"
  for word in "${ILP_LIST[@]}"; do vars+=(-e "$word"); done
  shift "$ILP_TAKEN"
  # shellcheck source=/dev/null
  source -- "$pin" || return 125
  ilp_pin_argv "$mode" "$@" || return
  local -a image_env=()
  for word in "${ILP_IMAGE_ENV[@]}"; do image_env+=(-e "$word"); done  # the image's Env, then the pod's
  # The image's user; the pod's account is that user inside (and the owner of what it writes on
  # volumes): root maps to the account by default, any other user through keep-id.
  user=(--user "$ILP_IMAGE_UID:$ILP_IMAGE_GID")
  if (( ILP_IMAGE_UID != 0 )); then
    user+=(--userns "keep-id:uid=$ILP_IMAGE_UID,gid=$ILP_IMAGE_GID")
  fi
  if [[ " ${global[*]} " == *=*fuse-overlayfs\ * ]]; then
    ilp_fuse_open "rootless podman's fuse-overlayfs" || return
  fi
  state=$(mktemp -d "${TMPDIR:-/tmp}/ilp-podman.XXXXXX") || return 125
  mkdir -m 700 -- "$state/xdg" "$state/home" || return 125
  workdir=${workdir:-${ILP_IMAGE_WORKDIR:-/}}
  ilp_podman_workdir "$state" "$workdir" "${options[@]}" || return 125
  options+=("${ILP_WORKDIR_MOUNT[@]}")
  ilp_pin_name "$pin"
  ilp_put "$ILP_POD_DIR/containers/$ILP_PIN_NAME/podman_state" "$state"
  ilp_podman_cmd "$state" "$exe" "${global[@]}"
  if (( ILP_PODMAN_STOPPING )); then  # stopped before it started
    ilp_podman_finish "$state" "$name"
    return 143
  fi
  # The container's output goes straight to ours (passthrough), not through `podman run`: on TERM
  # a rootless `podman run` returns at once, and the exit code then comes from `podman wait`.
  # --init: the process is not PID 1, so TERM ends it as under the other runtimes (143).
  "${ILP_PODMAN[@]}" run --name "$name" --init --log-driver passthrough --sig-proxy=false --network host \
    --hostname "$ILP_POD_HOSTNAME" "${user[@]}" -w "$workdir" "${devices[@]}" \
    "${options[@]}" "${ILP_PASS[@]}" "${image_env[@]}" "${vars[@]}" --rootfs "$ILP_IMAGE_ROOTFS:O" \
    "${ILP_ARGV[@]}" </dev/null &
  pid=$!
  ilp_wait_pid "$pid"; rc=$?
  if (( ILP_PODMAN_STOPPING )); then
    ilp_podman_stop "$name"  # again: TERM may have come while `podman run` was creating the container
    # In a session of its own, so the runner's second TERM does not end the wait; bounded, for a
    # container stopped before it started.
    setsid timeout $(( ${ILP_GRACE:-30} + 10 )) "${ILP_PODMAN[@]}" wait "$name" >"$state/exit_code" 2>/dev/null </dev/null &
    ilp_wait_pid $!
    word=$(<"$state/exit_code")
    if [[ $word =~ ^[0-9]+$ ]]; then rc=$word; elif (( rc == 0 )); then rc=143; fi
  fi
  ilp_podman_finish "$state" "$name"
  return "$rc"
}
ilp_podman_exec() {  # PIN EXE NAME N GLOBAL... COMMAND...: in the running container (its Env, its workdir)
  local pin=$1 exe=$2 name=$3 state
  shift 3
  ilp_counted "$@"; local -a global=("${ILP_LIST[@]}"); shift "$ILP_TAKEN"
  ilp_pin_name "$pin"
  # A postStart hook starts with the container: until podman has it running, there is nothing to
  # join (and once the container has ended, its state is gone).
  local waited=0
  while :; do
    if state=$(cat -- "$ILP_POD_DIR/containers/$ILP_PIN_NAME/podman_state" 2>/dev/null); then
      ilp_podman_cmd "$state" "$exe" "${global[@]}"
      [[ $("${ILP_PODMAN[@]}" container inspect --format '{{.State.Status}}' "$name" 2>/dev/null) == running ]] &&
        break
    fi
    (( waited++ < 150 )) || { echo "container $ILP_PIN_NAME is not running" >&2; return 126; }
    sleep 0.2
  done
  "${ILP_PODMAN[@]}" exec -i "${ILP_PASS[@]}" "$name" "$@"
}

# ---- lifecycle -----------------------------------------------------------------
ilp_probe_loop() {  # INDEX KIND DELAY PERIOD TIMEOUT FAILURES SUCCESSES
  local i=$1 kind=$2 delay=$3 period=$4 timeout=$5 fth=$6 sth=$7 ok=0 bad=0
  ilp_cdir "$i"
  sleep "$delay"
  if [[ $kind != startup && ${ILP_HAS_STARTUP[$i]} == 1 ]]; then
    until [[ -e $ILP_CDIR/startup_ok ]]; do sleep 1; done
  fi
  while :; do
    if timeout -k 1 "$timeout" "$ILP_SELF" __check "$i" "$kind" >/dev/null 2>&1; then
      ok=$((ok + 1)); bad=0
    else
      bad=$((bad + 1)); ok=0
    fi
    case $kind in
      startup)
        if (( ok >= sth )); then
          ilp_put "$ILP_CDIR/startup_ok" 1
          [[ ${ILP_HAS_READINESS[$i]} == 1 ]] || ilp_put "$ILP_CDIR/ready" 1
          return 0
        fi
        (( bad >= fth )) && { ilp_stop_container "$i" StartupProbeFailed; return 1; } ;;
      readiness)
        (( ok >= sth )) && ilp_put "$ILP_CDIR/ready" 1
        (( bad >= fth )) && ilp_put "$ILP_CDIR/ready" 0 ;;
      liveness)
        (( bad >= fth )) && { ilp_stop_container "$i" LivenessProbeFailed; return 1; } ;;
    esac
    sleep "$period"
  done
}
ilp_term() {  # PID: TERM a container's process group (ILP_CDIR is its directory)
  kill -TERM -- "-$1" 2>/dev/null || return 1
  # A container that started a moment ago may still be inside the sandbox's set-up, where TERM
  # has no effect yet (see ilp_sandbox) and would be lost: it gets TERM once more a second later.
  local born
  born=$(stat -c %Y -- "$ILP_CDIR/started_at" 2>/dev/null) || return 0
  if (( EPOCHSECONDS - born <= 3 )); then
    ( sleep 1; kill -TERM -- "-$1" 2>/dev/null ) &
  fi
  return 0
}
ilp_stop_container() {  # INDEX REASON: TERM the container's process group, KILL after grace
  local i=$1 pid waited=0
  ilp_cdir "$i"
  [[ -n ${2-} ]] && ilp_put "$ILP_CDIR/reason" "$2"
  pid=$(<"$ILP_CDIR/pid") || return 0
  ilp_term "$pid" || return 0
  while kill -0 -- "-$pid" 2>/dev/null && (( waited < ILP_GRACE * 5 )); do
    sleep 0.2; waited=$((waited + 1))
  done
  kill -KILL -- "-$pid" 2>/dev/null
  return 0
}
ilp_oom_kills() {  # processes of this job the kernel's OOM killer ended so far (cgroup v1 or v2)
  local ctrl path f
  while IFS=: read -r _ ctrl path; do
    case $ctrl in
      memory) f=/sys/fs/cgroup/memory$path/memory.oom_control ;;
      "") f=/sys/fs/cgroup$path/memory.events ;;
      *) continue ;;
    esac
    if [[ -r $f ]]; then
      awk '$1 == "oom_kill" { n = $2 } END { print n + 0 }' "$f"
      return
    fi
  done </proc/self/cgroup
  echo 0
}
ilp_exec_main() {  # the container's own process group: its output, timestamped
  local i=$1
  ilp_cdir "$i"
  trap ':' TERM INT
  set -o pipefail
  "ilp_run_$i" 2>&1 </dev/null | ilp_stamp >>"$ILP_CDIR/log"
}
ilp_runner() {  # one container's whole life: start, hooks, probes, restarts, exit code
  local i=$1 restarts=0 rc=0 backoff=$ILP_RESTART_BACKOFF pid started oom_before
  ilp_cdir "$i"
  local d=$ILP_CDIR
  trap ':' TERM INT  # the job's TERM must not keep us from recording the exit code
  mkdir -p -- "$d" && chmod 700 -- "$d"
  if ! "ilp_prepare_$i" >>"$d/log" 2>&1; then
    ilp_put "$d/reason" ErrImagePull
    ilp_now; ilp_put "$d/finished_at" "$ILP_NOW"; ilp_put "$d/exit_code" 128
    return 128
  fi
  while :; do
    if ! "ilp_mounts_$i" >>"$d/log" 2>&1; then
      ilp_put "$d/reason" CreateContainerConfigError
      ilp_now; ilp_put "$d/finished_at" "$ILP_NOW"; ilp_put "$d/exit_code" 128
      return 128
    fi
    (( restarts > 0 )) && [[ -e $d/log ]] && mv -f -- "$d/log" "$d/log.previous"
    rm -f -- "$d/exit_code" "$d/finished_at" "$d/startup_ok"
    ilp_put "$d/ready" 0
    oom_before=$(ilp_oom_kills)
    setsid "$ILP_SELF" __exec_main "$i" &
    pid=$!
    ilp_put "$d/pid" "$pid"
    if [[ ,${ILP_HOOKS[$i]}, == *,postStart,* ]]; then
      if ! "$ILP_SELF" __hook "$i" postStart >>"$d/hooks.log" 2>&1; then
        ilp_event "container ${ILP_NAMES[$i]}: postStart hook failed"
        ilp_stop_container "$i" FailedPostStartHook
      fi
    fi
    ilp_now; started=$ILP_NOW; ilp_put "$d/started_at" "$started"
    [[ ${ILP_GATED[$i]} == 1 ]] || ilp_put "$d/ready" 1
    "ilp_probes_$i"
    ilp_wait_pid "$pid"; rc=$?
    (( ${#ILP_PROBES[@]} )) && kill "${ILP_PROBES[@]}" 2>/dev/null
    ilp_put "$d/ready" 0
    # Killed (137) while the job's OOM killer count went up: say so now, not only once
    # Slurm ends the job as OUT_OF_MEMORY (a pod may outlive one container's OOM).
    if (( rc == 137 )) && [[ ! -e $d/reason ]] && (( $(ilp_oom_kills) > oom_before )); then
      ilp_put "$d/reason" OOMKilled
    fi
    ilp_now; ilp_put "$d/finished_at" "$ILP_NOW"; ilp_put "$d/exit_code" "$rc"
    [[ -e $ILP_POD_DIR/terminating ]] && break
    case ${ILP_POLICY[$i]} in
      Always) ;;
      OnFailure) (( rc == 0 )) && break ;;
      *) break ;;
    esac
    restarts=$((restarts + 1))
    ilp_put "$d/restarts" "$restarts"
    ilp_put "$d/last_state" "$rc $started $ILP_NOW"
    ilp_event "container ${ILP_NAMES[$i]} exited with $rc; restart $restarts in ${backoff}s"
    local slept=0
    while (( slept < backoff )) && [[ ! -e $ILP_POD_DIR/terminating ]]; do sleep 1; slept=$((slept + 1)); done
    [[ -e $ILP_POD_DIR/terminating ]] && break
    backoff=$(( backoff * 2 > 300 ? 300 : backoff * 2 ))
    rm -f -- "$d/reason"
  done
  return "$rc"
}
ilp_terminate() {  # [REASON]: on delete (USR1 from the sidecar), time limit (USR2) or the scheduler's TERM
  [[ -n ${ILP_TERMINATING-} ]] && return 0
  ILP_TERMINATING=1
  local reason=${1-} i pid hooks=() deadline=$((SECONDS + ILP_GRACE))
  ilp_put "$ILP_POD_DIR/terminating" "${reason:-1}"
  ilp_event "terminating${reason:+ ($reason)} (grace ${ILP_GRACE}s)"
  if [[ -n $reason ]]; then
    for i in "${ILP_INIT[@]}" "${ILP_APPS[@]}"; do
      ilp_running "$i" && [[ ! -e $ILP_CDIR/reason ]] && ilp_put "$ILP_CDIR/reason" "$reason"
    done
  fi
  for i in "${ILP_APPS[@]}"; do
    if ilp_running "$i" && [[ ,${ILP_HOOKS[$i]}, == *,preStop,* ]]; then
      timeout -k 1 "$ILP_GRACE" "$ILP_SELF" __hook "$i" preStop >>"$ILP_CDIR/hooks.log" 2>&1 &
      hooks+=($!)
    fi
  done
  for pid in "${hooks[@]}"; do ilp_wait_pid "$pid"; done
  for i in "${ILP_INIT[@]}" "${ILP_APPS[@]}"; do
    ilp_running "$i" || continue
    pid=$(<"$ILP_CDIR/pid") && ilp_term "$pid"
  done
  while (( SECONDS < deadline )); do
    local alive=0
    for i in "${ILP_INIT[@]}" "${ILP_APPS[@]}"; do ilp_running "$i" && alive=1; done
    (( alive )) || return 0
    sleep 0.2
  done
  for i in "${ILP_INIT[@]}" "${ILP_APPS[@]}"; do
    ilp_running "$i" || continue
    pid=$(<"$ILP_CDIR/pid") && kill -KILL -- "-$pid" 2>/dev/null
  done
}
ilp_skip_rest() {  # containers that will never run after an init container failed
  local failed=$1 rc=$2 i
  for i in "${ILP_INIT[@]}" "${ILP_APPS[@]}"; do
    ilp_cdir "$i"
    [[ -e $ILP_CDIR/started_at ]] && continue
    mkdir -p -- "$ILP_CDIR"
    ilp_put "$ILP_CDIR/skipped" "init container ${ILP_NAMES[$failed]} failed with exit code $rc"
  done
}
ilp_main() {
  trap ilp_terminate USR1 TERM INT
  trap 'ilp_terminate DeadlineExceeded' USR2
  local i pid rc worst=0 runners=()
  ilp_put "$ILP_POD_DIR/job_started" "${SLURM_JOB_ID:-${ILP_JOB_ID:-unknown}}"
  ilp_event "pod ${ILP_POD_NAME} starting on $(hostname)"
  ilp_pre_exec
  for i in "${ILP_INIT[@]}"; do
    [[ -e $ILP_POD_DIR/terminating ]] && break
    setsid "$ILP_SELF" __runner "$i" &
    ilp_wait_pid $!; rc=$?
    if (( rc != 0 )); then
      ilp_event "init container ${ILP_NAMES[$i]} failed with exit code $rc"
      ilp_skip_rest "$i" "$rc"
      exit "$rc"
    fi
  done
  for i in "${ILP_APPS[@]}"; do
    [[ -e $ILP_POD_DIR/terminating ]] && break
    setsid "$ILP_SELF" __runner "$i" &
    runners+=($!)
  done
  for pid in "${runners[@]}"; do
    ilp_wait_pid "$pid"; rc=$?
    (( rc > worst )) && worst=$rc
  done
  ilp_event "pod ${ILP_POD_NAME} finished (exit code $worst)"
  exit "$worst"
}

# ---- entry ---------------------------------------------------------------------
ilp_entry() {  # the job (no arguments), or one of the runner's own processes
  case ${1-} in
    __runner) ilp_runner "$2"; exit $? ;;
    __exec_main) ilp_exec_main "$2"; exit $? ;;
    __hook) fn="ilp_hook_$2_$3"; shift 3; "$fn"; exit $? ;;
    __check) fn="ilp_check_$2_$3"; shift 3; "$fn"; exit $? ;;
    __exec) fn="ilp_exec_$2"; shift 2; "$fn" "$@"; exit $? ;;
  esac
  cd -- "$ILP_POD_DIR" || exit 97
  ilp_main
}
