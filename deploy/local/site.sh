#!/usr/bin/env bash
# The embedded local site: a real single-node Slurm (munge + slurmctld + slurmd),
# the site's IAM-like IdP (interlink-provider devidp, HTTPS), real XRootD servers
# (anonymous, throttled, and token-authorized: TLS + ztn + SciTokens trusting the
# IdP) and a real Rucio server (SQLite, gunicorn; userpass and the IdP's tokens)
# with RSEs on them, all configured and kept in one directory; daemons are started by
# hand and stopped by their PID files. Under /etc only the site's accounts are made: the
# sidecar's service account (ilp), the accounts pods run as, never root (ilp-local, ilp-demo,
# ilp-gateway, ilp-alice, ilp-bob, all in the group ilp-users), the devidp's and the gateway's
# own (ilp-idpd, ilp-gatewayd) and one sudoers drop-in letting the service account start an
# agent as the pod accounts (/etc/sudoers.d/interlink-provider-local, checked with visudo).
# No interlink-provider process of the site runs as root: the devidp runs as ilp-idpd here, the
# sidecars as ilp and the gateway as ilp-gatewayd (deploy/local/federation.sh); what they read
# is theirs (the sidecars' copies of the TLS certificate and key in $ILP_SITE_DIR/pki/ilp, the
# Rucio password). Slurm, munge, XRootD, sshd and Rucio are the site's own daemons, started
# as their packages do (slurmd as root, as on any Slurm node).
#
#   deploy/local/site.sh install   apt packages (idempotent, skips what is present)
#   deploy/local/site.sh start     create the job accounts, generate config into $ILP_SITE_DIR, start daemons
#   deploy/local/site.sh stop      stop what `start` started
#   deploy/local/site.sh status    show daemons and the node state
#   deploy/local/site.sh accounts  the service account, pod accounts and sudoers rule only (start does it too)
#   deploy/local/site.sh env       print the exports a shell needs (SLURM_CONF)
#
# Environment: ILP_SITE_DIR (default <repo>/.site), ILP_SLURM_MIN_JOB_AGE (300),
# ILP_SLURM_CPUS (4), ILP_SLURM_MEMORY_MB (8000), ILP_SLURM_GPUS (2, file-backed),
# ILP_XRD_PORT (11094), ILP_SLOW_XRD_PORT (11095), ILP_TOKEN_XRD_PORT (11096),
# ILP_RUCIO_PORT (18081), ILP_SSH_PORT (2222: a loopback sshd, the "login node" of the
# SSH transport), ILP_SLURMRESTD_PORT (6820: slurmrestd with JWT auth, the REST
# transport; the HS256 key is $ILP_SITE_DIR/slurm/jwt_hs256.key). The IdP listens
# on 127.0.0.1:8480 (deploy/local/devidp.yaml). The container registry (Distribution, TLS from the
# site CA, images built from Debian packages) is deploy/local/images.sh's: ILP_REGISTRY_PORT (5443).
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
SITE=${ILP_SITE_DIR:-$REPO/.site}
SLURM_DIR=$SITE/slurm
# The second Slurm node, in a network namespace of its own (start_isolated_node).
ISOLATED_NODE=isolated1
ISOLATED_NETNS=ilp-isolated
ISOLATED_HOST_ADDR=10.251.0.1   # the host's end of the link (/30)
ISOLATED_NODE_ADDR=10.251.0.2   # the node's
ISOLATED_SLURMD_PORT=6819
XRD_DIR=$SITE/xrd
RUCIO_DIR=$SITE/rucio
IDP_DIR=$SITE/devidp
PKI_DIR=$SITE/pki
SSH_DIR=$SITE/ssh
SSH_PORT=${ILP_SSH_PORT:-2222}
RESTD_PORT=${ILP_SLURMRESTD_PORT:-6820}
JWT_KEY=$SLURM_DIR/jwt_hs256.key
IDP_URL=https://127.0.0.1:8480/
XRD_PORT=${ILP_XRD_PORT:-11094}
SLOW_XRD_PORT=${ILP_SLOW_XRD_PORT:-11095}
TOKEN_XRD_PORT=${ILP_TOKEN_XRD_PORT:-11096}
SLOW_XRD_RATE=${ILP_SLOW_XRD_RATE:-4000000}   # bytes/s: a "remote" storage on a slow link
RUCIO_PORT=${ILP_RUCIO_PORT:-18081}
RUCIO_VERSION=41.5.1
SERVICE_ACCOUNT=${ILP_SERVICE_ACCOUNT:-ilp}
USERS_GROUP=ilp-users
IDP_ACCOUNT=ilp-idpd           # the devidp's (deploy/local/devidp.yaml)
GATEWAY_ACCOUNT=ilp-gatewayd   # the gateway's (deploy/local/federation.sh)
SUDOERS=/etc/sudoers.d/interlink-provider-local
# The agent the sudoers rule names, as a real path (a checkout whose .venv links to another's
# names the same file, and so the same rule: sudo compares the file, not the path, when they differ).
AGENT=$(readlink -f "${ILP_VENV:-$REPO/.venv}/bin/interlink-provider" || echo "${ILP_VENV:-$REPO/.venv}/bin/interlink-provider")
export SLURM_CONF=$SLURM_DIR/slurm.conf

PACKAGES=(slurm-wlm munge bubblewrap python-is-python3 python3-venv nginx-light curl procps util-linux sudo
          xrootd-server xrootd-client xrootd-scitokens-plugins openssl ca-certificates openssh-server
          slurmrestd slurm-wlm-jwt-plugin
          docker-registry skopeo umoci busybox-static charliecloud-runtime  # images (#19): deploy/local/images.sh
          podman runc uidmap catatonit fuse-overlayfs  # the podman runtime (#19), rootless
          iproute2 socat)  # the isolated node: a network namespace, slurmctld's port forwarded into it

log() { printf '[site] %s\n' "$*" >&2; }
# shellcheck source=deploy/local/daemons.sh
source "$REPO/deploy/local/daemons.sh"

install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if (( ${#missing[@]} == 0 )); then
    log "packages present"
    return
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # nginx-light's postinst may start a daemon where an init system exists: not ours to keep.
  if [[ -f /run/nginx.pid ]]; then kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
}

install_rucio() {
  # The Rucio *server* lives in its own virtualenv: it and rucio-clients both install
  # the `rucio` package, and the project's venv has the clients.
  if [[ -x $RUCIO_DIR/venv/bin/gunicorn ]] && "$RUCIO_DIR/venv/bin/python" -c "import rucio" 2>/dev/null; then
    log "rucio server present"
    return
  fi
  log "installing the rucio $RUCIO_VERSION server into $RUCIO_DIR/venv"
  mkdir -p "$RUCIO_DIR"
  python3 -m venv "$RUCIO_DIR/venv"
  "$RUCIO_DIR/venv/bin/pip" install -q --disable-pip-version-check "rucio==$RUCIO_VERSION" gunicorn \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}


cgroup_memory_works() {
  # Slurm's task/cgroup needs a writable cgroup v1 memory controller here.
  local probe=/sys/fs/cgroup/memory/ilp-probe-$$
  mkdir "$probe" 2>/dev/null && rmdir "$probe"
}

write_config() {
  mkdir -p "$SLURM_DIR"/{state,spool,log}
  if [[ ! -s $JWT_KEY ]]; then  # slurmctld's key for auth/jwt (slurmrestd's clients)
    ( umask 077; head -c 32 /dev/urandom >"$JWT_KEY" )
  fi
  local cpus=${ILP_SLURM_CPUS:-4} mem=${ILP_SLURM_MEMORY_MB:-8000} gpus=${ILP_SLURM_GPUS:-2}
  local task=task/none proctrack=proctrack/linuxproc select=CR_Core
  if cgroup_memory_works; then
    task=task/cgroup proctrack=proctrack/cgroup select=CR_Core_Memory
  else
    log "cgroup v1 memory controller not writable: memory limits will not be enforced"
  fi
  local gres_line="" node_gres=""
  if (( gpus > 0 )); then
    # GPUs that are only files: real GRES scheduling and accounting without hardware.
    local i files=()
    for ((i = 0; i < gpus; i++)); do touch "$SLURM_DIR/fakegpu$i"; files+=("$SLURM_DIR/fakegpu$i"); done
    printf 'NodeName=localhost Name=gpu File=%s/fakegpu[0-%d]\n' "$SLURM_DIR" $((gpus - 1)) >"$SLURM_DIR/gres.conf"
    gres_line="GresTypes=gpu"
    node_gres="Gres=gpu:$gpus"
  else
    : >"$SLURM_DIR/gres.conf"
  fi
  cat >"$SLURM_DIR/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
EOF
  cat >"$SLURM_CONF.new" <<EOF
# Generated by deploy/local/site.sh: edit the script, not this file.
ClusterName=ilpsite
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool/%n
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd-%n.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd-%n.log
ProctrackType=$proctrack
TaskPlugin=$task
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=$select
DefMemPerCPU=256
ReturnToService=2
MinJobAge=${ILP_SLURM_MIN_JOB_AGE:-300}
MaxJobCount=20000
KillWait=10
MpiDefault=none
SlurmdParameters=config_overrides
$gres_line
# A compute node with no route to the login node's services (the registry among them): only
# slurmctld's port is forwarded into its network namespace. Listed first: Slurm takes any name
# for the only node when that node is called localhost, and would then call this one a duplicate.
# Its slurmd listens on a port of its own: on its loopback, 6818 is forwarded to localhost's
# slurmd (NodeAddr 127.0.0.1), which a job step spanning both nodes (a gang's) reaches there.
NodeName=$ISOLATED_NODE NodeAddr=$ISOLATED_NODE_ADDR Port=$ISOLATED_SLURMD_PORT CPUs=2 RealMemory=2000 State=UNKNOWN
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $node_gres State=UNKNOWN
PartitionName=isolated Nodes=$ISOLATED_NODE MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
# Both nodes, for gangs (one member per node): their first node, the rendezvous, is $ISOLATED_NODE,
# which the login node reaches over the veth link.
PartitionName=all Nodes=$ISOLATED_NODE,localhost MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
# The second "site" of the local federation (deploy/local/sidecar-b.yaml) submits here.
PartitionName=batch Nodes=localhost MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  mv -f "$SLURM_CONF.new" "$SLURM_CONF"
}


munge_works() { munge -n </dev/null >/dev/null 2>&1; }

start_munge() {
  if munge_works; then
    log "munged already running"
    return
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating the munge key the package did not create"
    runuser -u munge -- /usr/sbin/mungekey --create
  fi
  runuser -u munge -- /usr/sbin/munged
  touch "$SITE/munged.ours"
  cp /run/munge/munged.pid "$SITE/munged.pid" 2>/dev/null || pgrep -xn munged >"$SITE/munged.pid"
  munge_works || { log "munged does not answer"; return 1; }
}

wait_node_idle() {  # wait_node_idle [NODE]: until the node (localhost) takes jobs, else its slurmd log
  local node=${1:-localhost} i
  for ((i = 0; i < 150; i++)); do
    if sinfo -h -n "$node" -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then return 0; fi
    sleep 0.2
  done
  log "the node $node did not become idle; slurmd log:"
  tail -20 "$SLURM_DIR/log/slurmd-$node.log" >&2 || true
  return 1
}

run_xrootd() {  # run_xrootd NAME DIR PORT [THROTTLE_BYTES_PER_SECOND]: one instance over the shared data
  local name=$1 dir=$2 port=$3 throttle=${4:-}
  if pid_alive "$dir/run/xrootd.pid"; then
    log "$name already running (port $port)"
    return
  fi
  mkdir -p "$XRD_DIR/data" "$dir"/{run,log}
  chown nobody "$XRD_DIR/data" "$dir"/{run,log}   # the server drops to nobody before opening them
  {
    echo "# Generated by deploy/local/site.sh"
    echo "all.export /"
    echo "oss.localroot $XRD_DIR/data"
    echo "xrd.port $port"
    echo "all.adminpath $dir/run"
    echo "all.pidpath $dir/run"
    echo "xrootd.chksum adler32"
    if [[ -n $throttle ]]; then
      echo "xrootd.fslib throttle default"
      echo "throttle.throttle data $throttle"
    fi
  } >"$dir/xrootd.cfg"
  xrootd -c "$dir/xrootd.cfg" -l "$dir/log/xrootd.log" -R nobody -b
  local i
  for ((i = 0; i < 50; i++)); do
    XRD_CONNECTIONRETRY=1 XRD_REQUESTTIMEOUT=5 timeout 3 xrdfs "127.0.0.1:$port" ls / >/dev/null 2>&1 && break
    sleep 0.2
  done
  log "$name up on root://127.0.0.1:$port${throttle:+ (throttled to $throttle B/s)}"
}

start_xrootd() {
  run_xrootd xrootd "$XRD_DIR" "$XRD_PORT"
  # The same files behind a throttled server: Rucio's SLOW_XRD, a "remote" storage.
  run_xrootd "slow xrootd" "$XRD_DIR/slow" "$SLOW_XRD_PORT" "$SLOW_XRD_RATE"
}

make_pki() {
  # The site's own CA and a host certificate for 127.0.0.1/localhost (the token xrootd's TLS).
  if [[ -s $PKI_DIR/host.pem && -s $PKI_DIR/ca-dir/ca.pem ]]; then return; fi
  mkdir -p "$PKI_DIR/ca-dir"
  (
    umask 077
    cd "$PKI_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=interlink-provider local site CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout host.key -out host.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >host.ext
    openssl x509 -req -in host.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out host.pem -days 825 \
      -extfile host.ext 2>/dev/null
  )
  cp "$PKI_DIR/ca.pem" "$PKI_DIR/ca-dir/ca.pem"
  chmod 755 "$PKI_DIR" "$PKI_DIR/ca-dir"
  chmod 644 "$PKI_DIR/ca-dir/ca.pem" "$PKI_DIR/ca.pem"
  openssl rehash "$PKI_DIR/ca-dir"   # X509_CERT_DIR layout for xrootd and its clients
  chown nobody "$PKI_DIR/host.pem" "$PKI_DIR/host.key"
  log "site CA in $PKI_DIR/ca-dir (X509_CERT_DIR for clients of the token xrootd)"
}

start_slurmrestd() {
  # Slurm's REST API for the slurmrestd transport: JWT only, as an unprivileged account
  # (slurmrestd refuses to run as root or SlurmUser), loopback only.
  local dir=$SLURM_DIR/restd i
  if pid_alive "$dir/slurmrestd.pid"; then log "slurmrestd already running (127.0.0.1:$RESTD_PORT)"; return; fi
  id slurmrest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin slurmrest
  mkdir -p "$dir"
  SLURM_CONF=$SLURM_CONF SLURM_JWT=daemon setsid runuser -u slurmrest -- \
    /usr/sbin/slurmrestd -a rest_auth/jwt -s openapi/v0.0.38 "127.0.0.1:$RESTD_PORT" \
    >>"$dir/slurmrestd.log" 2>&1 </dev/null &
  echo $! >"$dir/slurmrestd.pid"
  for ((i = 0; i < 50; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$RESTD_PORT") 2>/dev/null && break
    sleep 0.1
  done
  pid_alive "$dir/slurmrestd.pid" || { log "slurmrestd did not start:"; tail "$dir/slurmrestd.log" >&2; return 1; }
  log "slurmrestd up on http://127.0.0.1:$RESTD_PORT (JWT key $JWT_KEY)"
}

start_sshd() {
  # A login node for the SSH transport: sshd on loopback with the site's own host key,
  # root by key only; the sidecar's client key and known_hosts are written beside it.
  if pid_alive "$SSH_DIR/sshd.pid"; then log "sshd already running (127.0.0.1:$SSH_PORT)"; return; fi
  mkdir -p "$SSH_DIR" /run/sshd
  chmod 700 "$SSH_DIR"
  [[ -s $SSH_DIR/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/host_ed25519"
  [[ -s $SSH_DIR/client_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C sidecar -f "$SSH_DIR/client_ed25519"
  cp "$SSH_DIR/client_ed25519.pub" "$SSH_DIR/authorized_keys"
  printf '[127.0.0.1]:%s %s\n' "$SSH_PORT" "$(cut -d' ' -f1,2 "$SSH_DIR/host_ed25519.pub")" >"$SSH_DIR/known_hosts"
  cat >"$SSH_DIR/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_ed25519
PidFile $SSH_DIR/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 64
MaxStartups 64
SetEnv SLURM_CONF=$SLURM_CONF
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
  /usr/sbin/sshd -t -f "$SSH_DIR/sshd_config"
  /usr/sbin/sshd -f "$SSH_DIR/sshd_config" -E "$SSH_DIR/sshd.log"
  local i
  for ((i = 0; i < 50; i++)); do pid_alive "$SSH_DIR/sshd.pid" && break; sleep 0.1; done
  pid_alive "$SSH_DIR/sshd.pid" || { log "sshd did not start:"; tail "$SSH_DIR/sshd.log" >&2; return 1; }
  log "sshd up on 127.0.0.1:$SSH_PORT (client key $SSH_DIR/client_ed25519, known_hosts beside it)"
}

start_devidp() {
  local bin=$REPO/.venv/bin/interlink-provider i
  if pid_alive "$IDP_DIR/devidp.pid"; then
    log "devidp already running ($IDP_URL)"
    return
  fi
  if [[ ! -x $bin ]]; then
    log "no $bin: run deploy/local/install.sh first (the IdP is part of the project)"
    return 1
  fi
  mkdir -p "$IDP_DIR"
  # Its state (signing keys, its CA's key, the admin token) is its own account's: a site that
  # ran it as root left them root's.
  chown -R "$IDP_ACCOUNT:$IDP_ACCOUNT" "$IDP_DIR"
  # HTTPS on loopback (deploy/local/devidp.yaml), so no --insecure-dev: the devidp refuses
  # plain HTTP and other addresses without it (an ERROR line in its log, exit code 2).
  as_account "$IDP_ACCOUNT"
  ILP_SITE_DIR=$SITE setsid "${AS_ACCOUNT[@]}" "$bin" devidp --config "$REPO/deploy/local/devidp.yaml" \
    >>"$IDP_DIR/devidp.log" 2>&1 </dev/null &
  echo $! >"$IDP_DIR/devidp.pid"
  for ((i = 0; i < 100; i++)); do
    [[ -s $IDP_DIR/ca.pem ]] && curl -sf --cacert "$IDP_DIR/ca.pem" "${IDP_URL}healthz" >/dev/null && break
    pid_alive "$IDP_DIR/devidp.pid" || break   # it refused its config: no use waiting
    sleep 0.1
  done
  curl -sf --cacert "$IDP_DIR/ca.pem" "${IDP_URL}healthz" >/dev/null || { log "devidp did not start:"; tail "$IDP_DIR/devidp.log" >&2; return 1; }
  log "devidp up on $IDP_URL (CA $IDP_DIR/ca.pem)"
}

start_token_xrootd() {
  # Storage that only token holders may use: TLS, the ztn protocol and SciTokens
  # authorization trusting the site IdP (scope paths are relative to /rucio).
  # SciTokens fetches the IdP's keys over HTTPS with the system CA bundle, so the
  # server runs in its own mount namespace where that bundle also holds the IdP's CA.
  local dir=$XRD_DIR/token i
  if pid_alive "$dir/run/xrootd.pid"; then
    log "token xrootd already running (port $TOKEN_XRD_PORT)"
    return
  fi
  mkdir -p "$dir"/{data/rucio,run,log,cache}
  chown nobody "$dir"/{data,data/rucio,run,log,cache}
  cat /etc/ssl/certs/ca-certificates.crt "$IDP_DIR/ca.pem" >"$dir/ca-bundle.pem"
  cat >"$dir/scitokens.cfg" <<EOF
# Generated by deploy/local/site.sh
[Global]
audience = https://127.0.0.1:$TOKEN_XRD_PORT
onmissing = deny

[Issuer devidp]
issuer = $IDP_URL
base_path = /rucio
default_user = nobody
EOF
  cat >"$dir/xrootd.cfg" <<EOF
# Generated by deploy/local/site.sh
all.export /rucio
oss.localroot $dir/data
xrd.port $TOKEN_XRD_PORT
all.adminpath $dir/run
all.pidpath $dir/run
xrootd.chksum adler32
xrd.tls $PKI_DIR/host.pem $PKI_DIR/host.key
xrd.tlsca certdir $PKI_DIR/ca-dir
xrootd.tls capable all
xrootd.seclib libXrdSec.so
sec.protocol ztn
sec.protbind * only ztn
ofs.authorize 1
ofs.authlib libXrdAccSciTokens.so config=$dir/scitokens.cfg
EOF
  XDG_CACHE_HOME=$dir/cache unshare --mount --propagation private sh -c \
    'mount --bind "$1" /etc/ssl/certs/ca-certificates.crt && exec xrootd -c "$2" -l "$3" -R nobody -b' \
    sh "$dir/ca-bundle.pem" "$dir/xrootd.cfg" "$dir/log/xrootd.log"
  for ((i = 0; i < 50; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$TOKEN_XRD_PORT") 2>/dev/null && break
    sleep 0.2
  done
  log "token xrootd up on root://127.0.0.1:$TOKEN_XRD_PORT (TLS + ztn, SciTokens from $IDP_URL)"
}

write_rucio_config() {
  local site_packages
  site_packages=$("$RUCIO_DIR/venv/bin/python" -c "import rucio, os; print(os.path.dirname(os.path.dirname(rucio.__file__)))")
  cat >"$RUCIO_DIR/rucio.cfg" <<EOF
# Generated by deploy/local/site.sh (the server, and the client its bootstrap uses)
[common]
logdir = $RUCIO_DIR/log
loglevel = WARNING
[database]
default = sqlite:///$RUCIO_DIR/rucio.db
[bootstrap]
userpass_identity = ddmlab
userpass_pwd = secret
userpass_email = ddmlab@example.org
[client]
rucio_host = http://127.0.0.1:$RUCIO_PORT
auth_host = http://127.0.0.1:$RUCIO_PORT
auth_type = userpass
username = ddmlab
password = secret
account = root
request_retries = 1
[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash
[api]
endpoints_remove = traces, nongrid_traces
[alembic]
cfg = $RUCIO_DIR/alembic.ini
[oidc]
# Bearer tokens of the site IdP (aud rucio, scope openid profile) are accepted;
# identities SUB=<sub>, ISS=<issuer> are mapped to accounts by rucio_setup.py.
idpsecrets = $RUCIO_DIR/idpsecrets.json
admin_issuer = devidp
expected_audience = rucio
expected_scope = openid profile
EOF
  cat >"$RUCIO_DIR/idpsecrets.json" <<EOF
{"devidp": {"issuer": "$IDP_URL", "client_id": "rucio", "client_secret": "rucio-secret",
            "redirect_uris": ["http://127.0.0.1:$RUCIO_PORT/auth/oidc_code"],
            "SCIM": {"client_id": "rucio", "client_secret": "rucio-secret"}}}
EOF
  chmod 600 "$RUCIO_DIR/idpsecrets.json"
  cat >"$RUCIO_DIR/alembic.ini" <<EOF
[alembic]
script_location = $site_packages/rucio/db/sqla/migrate_repo
sqlalchemy.url = sqlite:///$RUCIO_DIR/rucio.db
[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)s %(message)s
EOF
}

start_rucio() {
  ( umask 077; printf 'secret\n' >"$RUCIO_DIR/password" )   # the sidecar's copy of the local userpass
  chown "$SERVICE_ACCOUNT:$SERVICE_ACCOUNT" "$RUCIO_DIR/password"  # the sidecars' own (they run as it)
  if pid_alive "$RUCIO_DIR/gunicorn.pid"; then
    log "rucio already running (http://127.0.0.1:$RUCIO_PORT)"
    return
  fi
  mkdir -p "$RUCIO_DIR/log"
  write_rucio_config
  export RUCIO_CONFIG=$RUCIO_DIR/rucio.cfg
  if [[ ! -s $RUCIO_DIR/rucio.db ]]; then
    "$RUCIO_DIR/venv/bin/python" "$REPO/deploy/local/rucio_setup.py" bootstrap
  fi
  # SQLite in WAL mode: readers do not wait for a writer, so concurrent clients (test workers,
  # several sidecars) are not told "database is locked" while one registers a dataset.
  "$RUCIO_DIR/venv/bin/python" -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL")' \
    "$RUCIO_DIR/rucio.db"
  # The server discovers the IdP (and fetches its keys) over HTTPS: trust the IdP's CA. One
  # worker, one request at a time: SQLite takes one writer, and two gunicorn workers writing at
  # once told clients "database is locked" under load (test workers staging in parallel).
  REQUESTS_CA_BUNDLE=$IDP_DIR/ca.pem \
  "$RUCIO_DIR/venv/bin/gunicorn" --daemon --pid "$RUCIO_DIR/gunicorn.pid" --workers 1 --threads 1 --timeout 120 \
    --bind "127.0.0.1:$RUCIO_PORT" --error-logfile "$RUCIO_DIR/log/gunicorn.log" \
    'rucio.web.rest.flaskapi.v1.main:application'
  local i
  for ((i = 0; i < 100; i++)); do
    curl -sf "http://127.0.0.1:$RUCIO_PORT/ping" >/dev/null && break
    sleep 0.2
  done
  "$RUCIO_DIR/venv/bin/python" "$REPO/deploy/local/rucio_setup.py" populate "$XRD_PORT" "$SLOW_XRD_PORT" \
    "$TOKEN_XRD_PORT" "$IDP_URL" "$RUCIO_DIR/sample-data"
  log "rucio up on http://127.0.0.1:$RUCIO_PORT (RSEs LOCAL_XRD, SLOW_XRD, TOKEN_XRD; dataset demo:input-data)"
}

# The local accounts (deploy/local/sidecar.yaml, sidecar-b.yaml), none of them root:
#   ilp          the sidecar's service account (the multi-account mode: it runs unprivileged
#                and starts each pod account's agent through one sudo rule)
#   ilp-idpd, ilp-gatewayd  the devidp's and the gateway's (they act as nobody else)
#   ilp-local    pods of the interLink API server (the tokenless unix socket)
#   ilp-demo     members of the IdP's /demo group (demo-user, the device-flow user demo)
#   ilp-gateway  pods the gateway sends under its own identity
#   ilp-alice, ilp-bob  the tests' two identities
# Every pod account is in ilp-users, the group the sudoers rule lets the service account act as.
POD_ACCOUNTS=(ilp-local ilp-demo ilp-gateway ilp-alice ilp-bob)

setup_accounts() {
  getent group "$USERS_GROUP" >/dev/null || groupadd --system "$USERS_GROUP"
  local daemon
  for daemon in "$SERVICE_ACCOUNT" "$IDP_ACCOUNT" "$GATEWAY_ACCOUNT"; do  # in no group of pod accounts
    id "$daemon" >/dev/null 2>&1 ||
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$daemon" 2>/dev/null ||
      id "$daemon" >/dev/null 2>&1 || { log "cannot create the account $daemon"; return 1; }
  done
  local account rule tmp
  for account in "${POD_ACCOUNTS[@]}"; do
    # another process (a test worker) may create it at the same moment
    id "$account" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$account" 2>/dev/null ||
      id "$account" >/dev/null 2>&1 || { log "cannot create the account $account"; return 1; }
    id -nG "$account" | tr ' ' '\n' | grep -qx "$USERS_GROUP" || usermod -a -G "$USERS_GROUP" "$account"
    subordinate_ids "$account" || return 1
  done
  rule="$SERVICE_ACCOUNT ALL=(%$USERS_GROUP) NOPASSWD: $AGENT site agent"
  if [[ "$(cat "$SUDOERS" 2>/dev/null)" != *"$rule"* ]]; then
    tmp=$(mktemp)
    printf '# interlink-provider (deploy/local/site.sh): the sidecar may start an agent as a pod account\n%s\n' \
      "$rule" >"$tmp"
    visudo -c -q -f "$tmp" || { rm -f "$tmp"; log "the sudoers rule does not parse: $rule"; return 1; }
    install -m 0440 -o root -g root "$tmp" "$SUDOERS"
    rm -f "$tmp"
    log "sudoers: $rule"
  fi
}

subordinate_ids() {
  # Rootless podman (the podman runtime) maps a container's other users to the account's ranges
  # in /etc/subuid and /etc/subgid. useradd gives them on Debian; an account without one gets the
  # next free 65536 ids after every range there is, the same range in both files.
  local account=$1 first
  grep -q "^$account:" /etc/subuid 2>/dev/null && grep -q "^$account:" /etc/subgid 2>/dev/null && return 0
  first=$(cat /etc/subuid /etc/subgid 2>/dev/null |
          awk -F: 'BEGIN { end = 100000 } $3 > 0 && $2 + $3 > end { end = $2 + $3 } END { print end }')
  usermod --add-subuids "$first-$((first + 65535))" --add-subgids "$first-$((first + 65535))" "$account" ||
    { log "cannot give $account subordinate ids"; return 1; }
  log "subordinate ids of $account: $first-$((first + 65535))"
}

fuse_device() {
  # Rootless podman mounts the image with fuse-overlayfs, which opens /dev/fuse as the pod's account.
  # A booted distribution has it 0666 (udev's rule, KERNEL=="fuse" MODE="0666"); a container or a
  # machine without udev may leave the kernel's 0600: do what the rule does.
  [[ -c /dev/fuse ]] || { log "no /dev/fuse: the podman runtime cannot mount images"; return 0; }
  [[ $(stat -c %a /dev/fuse) == 666 ]] && return 0
  chmod 0666 /dev/fuse && log "/dev/fuse made 0666, as udev's rule makes it"
}

service_account_files() {
  # The sidecars' own copies of the site's TLS certificate and key (the originals are the token
  # xrootd's, owned by nobody): they run as the service account and read no root-only file.
  local dir=$PKI_DIR/$SERVICE_ACCOUNT name mode tmp
  mkdir -p "$dir"
  chown "$SERVICE_ACCOUNT:$SERVICE_ACCOUNT" "$dir"
  chmod 0700 "$dir"
  for name in host.pem:0644 host.key:0600; do
    mode=${name#*:} name=${name%%:*}
    cmp -s "$PKI_DIR/$name" "$dir/$name" && continue
    tmp=$(mktemp "$dir/.$name.XXXXXX")   # renamed into place: test workers start the site at once
    cat "$PKI_DIR/$name" >"$tmp"
    chown "$SERVICE_ACCOUNT:$SERVICE_ACCOUNT" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dir/$name"
  done
}

start() {
  mkdir -p "$SITE"
  setup_accounts
  fuse_device
  start_munge

  start_slurm
  start_slurmrestd
  start_sshd
  start_xrootd
  make_pki
  service_account_files
  start_devidp
  start_token_xrootd
  start_rucio
  start_registry
}

start_registry() {
  # After make_pki (its certificate is the site CA's) and the devidp (which issues its tokens:
  # anyone pulls, private/* needs a pull secret, deploy/local/devidp.yaml `registry:`). Not fatal
  # while no sidecar of the site uses images (#19): the rest of the site serves without it.
  mkdir -p "$SITE/registry"
  ( umask 077
    printf '{"auths": {"127.0.0.1:%s": {"auth": "%s"}}}\n' "${ILP_REGISTRY_PORT:-5443}" \
      "$(printf 'registry-builder:builder-secret' | base64 -w0)" >"$SITE/registry/builder-auth.json" )
  ILP_SITE_DIR=$SITE ILP_REGISTRY_TOKEN_REALM="${IDP_URL}registry/token" ILP_REGISTRY_TOKEN_SERVICE=ilp-local-registry \
    ILP_REGISTRY_TOKEN_ISSUER="$IDP_URL" ILP_REGISTRY_TOKEN_CERT="$IDP_DIR/registry-token.pem" \
    ILP_REGISTRY_TOKEN_CA="$IDP_DIR/ca.pem" ILP_REGISTRY_AUTHFILE="$SITE/registry/builder-auth.json" \
    bash "$REPO/deploy/local/images.sh" start ||
    log "WARNING: the container registry did not start (deploy/local/images.sh start; its log: $SITE/registry/registry.log)"
}

start_slurm() {
  if pid_alive "$SLURM_DIR/slurmctld.pid" && pid_alive "$SLURM_DIR/slurmd-localhost.pid"; then
    log "slurm already running ($SLURM_CONF)"
    wait_node_idle
    start_isolated_node
    return
  fi
  stop_slurm
  write_config
  mkdir -p "$SLURM_DIR/spool/localhost"
  /usr/sbin/slurmctld -i
  /usr/sbin/slurmd -N localhost
  wait_node_idle
  scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
  start_isolated_node
  log "slurm up: $(sinfo -h -o '%P %T %C %G' | tr '\n' ' ')"
}

start_isolated_node() {
  # The isolated node's slurmd runs in a network namespace of its own, linked to the host by a
  # veth pair: it reaches slurmctld through a port forwarded onto its own loopback (where
  # SlurmctldHost=localhost points) and slurmctld reaches it at its address, but the services the
  # login node serves on its loopback (the registry, xrootd, the devidp) are not there. Jobs of
  # the `isolated` partition run there, as on a compute node without outbound network. Not fatal:
  # the rest of the site serves without it.
  pid_alive "$SLURM_DIR/slurmd-$ISOLATED_NODE.pid" && pid_alive "$SLURM_DIR/isolated-forward.pid" &&
    pid_alive "$SLURM_DIR/isolated-forward-slurmd.pid" && return 0
  local netns=/run/netns/$ISOLATED_NETNS
  if [[ ! -e $netns ]]; then
    { ip netns add "$ISOLATED_NETNS" &&
      ip link add ilp-iso-host type veth peer name ilp-iso-node &&
      ip link set ilp-iso-node netns "$ISOLATED_NETNS" &&
      ip addr add "$ISOLATED_HOST_ADDR/30" dev ilp-iso-host && ip link set ilp-iso-host up &&
      ip -n "$ISOLATED_NETNS" addr add "$ISOLATED_NODE_ADDR/30" dev ilp-iso-node &&
      ip -n "$ISOLATED_NETNS" link set ilp-iso-node up && ip -n "$ISOLATED_NETNS" link set lo up
    } || { log "WARNING: no network namespace for the isolated node: partition isolated stays down"; return 0; }
  fi
  stop_isolated_daemons
  # nsenter --net, not `ip netns exec`: that one remounts /sys, and slurmd needs the host's cgroups.
  forward_into_isolated "$netns" 6817 isolated-forward        # slurmctld
  forward_into_isolated "$netns" 6818 isolated-forward-slurmd # localhost's slurmd
  mkdir -p "$SLURM_DIR/spool/$ISOLATED_NODE"
  nsenter --net="$netns" /usr/sbin/slurmd -N "$ISOLATED_NODE" ||
    { log "WARNING: the isolated node's slurmd did not start ($SLURM_DIR/log/slurmd-$ISOLATED_NODE.log)"; return 0; }
  scontrol update nodename="$ISOLATED_NODE" state=resume >/dev/null 2>&1 || true
  wait_node_idle "$ISOLATED_NODE" || log "WARNING: partition isolated stays down"
}

forward_into_isolated() {  # NETNS PORT NAME: the host's PORT on the isolated node's loopback
  nsenter --net="$1" setsid socat "TCP-LISTEN:$2,bind=127.0.0.1,fork,reuseaddr" \
    "TCP:$ISOLATED_HOST_ADDR:$2" </dev/null >>"$SLURM_DIR/log/$3.log" 2>&1 &
  echo $! >"$SLURM_DIR/$3.pid"
}

stop_isolated_daemons() {
  stop_pidfile "$SLURM_DIR/slurmd-$ISOLATED_NODE.pid" "slurmd of $ISOLATED_NODE"
  stop_pidfile "$SLURM_DIR/isolated-forward.pid" "slurmctld's port forward"
  stop_pidfile "$SLURM_DIR/isolated-forward-slurmd.pid" "localhost slurmd's port forward"
}

stop_isolated_node() {
  stop_isolated_daemons
  if [[ -e /run/netns/$ISOLATED_NETNS ]]; then ip netns delete "$ISOLATED_NETNS" || true; fi  # the veth pair goes with it
}

stop_slurm() {
  stop_pidfile "$SLURM_DIR/restd/slurmrestd.pid" slurmrestd
  stop_isolated_node
  stop_pidfile "$SLURM_DIR/slurmd-localhost.pid" slurmd
  stop_pidfile "$SLURM_DIR/slurmd.pid" "slurmd (an older site's)"
  stop_pidfile "$SLURM_DIR/slurmctld.pid" slurmctld
}

stop() {
  ILP_SITE_DIR=$SITE bash "$REPO/deploy/local/images.sh" stop
  stop_pidfile "$RUCIO_DIR/gunicorn.pid" rucio
  stop_pidfile "$XRD_DIR/run/xrootd.pid" xrootd
  stop_pidfile "$XRD_DIR/slow/run/xrootd.pid" "slow xrootd"
  stop_pidfile "$XRD_DIR/token/run/xrootd.pid" "token xrootd"
  stop_pidfile "$IDP_DIR/devidp.pid" devidp
  stop_pidfile "$SSH_DIR/sshd.pid" sshd
  stop_slurm
  if [[ -f $SITE/munged.ours ]]; then
    stop_pidfile "$SITE/munged.pid" munged
    rm -f "$SITE/munged.ours"
  fi
}

status() {
  local name file
  for name in slurmctld slurmd; do
    file=$SLURM_DIR/$name.pid
    [[ $name == slurmd ]] && file=$SLURM_DIR/slurmd-localhost.pid
    if pid_alive "$file"; then echo "$name running ($(cat "$file"))"; else echo "$name stopped"; fi
  done
  pid_alive "$SLURM_DIR/slurmd-$ISOLATED_NODE.pid" && echo "isolated node running ($ISOLATED_NODE, partition isolated)" ||
    echo "isolated node stopped"
  munge_works && echo "munged running" || echo "munged stopped"
  pid_alive "$XRD_DIR/run/xrootd.pid" && echo "xrootd running (root://127.0.0.1:$XRD_PORT)" || echo "xrootd stopped"
  pid_alive "$XRD_DIR/slow/run/xrootd.pid" && echo "slow xrootd running (root://127.0.0.1:$SLOW_XRD_PORT)" || echo "slow xrootd stopped"
  pid_alive "$XRD_DIR/token/run/xrootd.pid" && echo "token xrootd running (root://127.0.0.1:$TOKEN_XRD_PORT)" || echo "token xrootd stopped"
  pid_alive "$IDP_DIR/devidp.pid" && echo "devidp running ($IDP_URL)" || echo "devidp stopped"
  pid_alive "$SLURM_DIR/restd/slurmrestd.pid" && echo "slurmrestd running (http://127.0.0.1:$RESTD_PORT)" || echo "slurmrestd stopped"
  pid_alive "$SSH_DIR/sshd.pid" && echo "sshd running (127.0.0.1:$SSH_PORT)" || echo "sshd stopped"
  pid_alive "$RUCIO_DIR/gunicorn.pid" && echo "rucio running (http://127.0.0.1:$RUCIO_PORT)" || echo "rucio stopped"
  ILP_SITE_DIR=$SITE bash "$REPO/deploy/local/images.sh" status
  sinfo 2>/dev/null || true
}

case ${1:-} in
  install) install_packages; install_rucio ;;
  accounts) setup_accounts ;;
  start) start ;;
  stop) stop ;;
  restart) stop_slurm; start ;;
  status) status ;;
  env) printf 'export SLURM_CONF=%q\nexport ILP_SITE_DIR=%q\nexport RUCIO_CONFIG=%q\nexport X509_CERT_DIR=%q\n' \
       "$SLURM_CONF" "$SITE" "$RUCIO_DIR/rucio.cfg" "$PKI_DIR/ca-dir"
       ILP_SITE_DIR=$SITE bash "$REPO/deploy/local/images.sh" env ;;
  *) echo "usage: $0 {install|start|stop|restart|status|env|accounts}" >&2; exit 2 ;;
esac
