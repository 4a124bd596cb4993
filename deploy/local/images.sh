#!/usr/bin/env bash
# The local site's container registry (issue #19): CNCF Distribution (Debian's docker-registry)
# on loopback with TLS from the site's CA, and the images the tests and demos run, built here
# from Debian packages (busybox-static) with umoci and pushed with skopeo: no image comes from
# the Internet. The builds are reproducible (fixed timestamps, sorted content): two sites build
# the same digests, and a build is skipped when the registry already holds the tag.
#
#   deploy/local/images.sh start    registry up (its certificate made first), images built if missing
#   deploy/local/images.sh stop     stop the registry
#   deploy/local/images.sh status   one line: running or stopped
#   deploy/local/images.sh build    the images only (the registry must be up)
#   deploy/local/images.sh env      the exports a client needs (ILP_REGISTRY, ILP_REGISTRY_CERT_DIR)
#
# Images (the mirror of docker.io and ghcr.io, so pods name them as usual; see IMAGES below and
# interlink_provider/images), e.g.:
#   library/busybox:latest   /bin/busybox and its applet links, Cmd ["sh"], Env PATH
#   ilp/entrypoint:1         the same rootfs and /work; Entrypoint ["/bin/echo","from-entrypoint"],
#                            Cmd ["default-arg"], Env GREETING=image, WorkingDir /work
#   library/python:3.11-alpine  busybox and Debian's python3.11 with its standard library
#
# Environment: ILP_SITE_DIR (default <repo>/.site), ILP_REGISTRY_PORT (5443), ILP_REGISTRY_IMAGES
# (the REPO:TAG names to build, space-separated; default: all of IMAGES),
# ILP_REGISTRY_DIR ($ILP_SITE_DIR/registry: config, storage, certificate, log, PID file).
# The certificate is signed by the site CA ($ILP_SITE_DIR/pki/ca.pem and ca.key, made by
# site.sh); run alone on a directory without one, a CA of its own is made in $ILP_REGISTRY_DIR/pki.
# Clients trust $ILP_REGISTRY_DIR/certs (skopeo's --cert-dir layout: ca.crt).
# A private registry (the tests of imagePullSecrets): ILP_REGISTRY_HTPASSWD, a bcrypt htpasswd file
# the registry then requires, and ILP_REGISTRY_AUTHFILE, a containers-auth.json the build uses.
# Token auth (what site.sh starts, the devidp issuing the tokens, deploy/local/devidp.yaml
# `registry:`): ILP_REGISTRY_TOKEN_REALM (the token endpoint), ILP_REGISTRY_TOKEN_SERVICE and
# ILP_REGISTRY_TOKEN_ISSUER (the tokens' aud and iss), ILP_REGISTRY_TOKEN_CERT (the certificate the
# tokens are signed with) and ILP_REGISTRY_TOKEN_CA (the realm's HTTPS CA, which clients then trust
# too: copied into the certs directory); the build pushes with ILP_REGISTRY_AUTHFILE.
# The registry runs as the docker-registry account its package creates, never as root.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
SITE=${ILP_SITE_DIR:-$REPO/.site}
PORT=${ILP_REGISTRY_PORT:-5443}
REG_DIR=${ILP_REGISTRY_DIR:-$SITE/registry}
REGISTRY=127.0.0.1:$PORT
CERT_DIR=$REG_DIR/certs
REG_ACCOUNT=docker-registry
HTPASSWD=${ILP_REGISTRY_HTPASSWD:-}
TOKEN_REALM=${ILP_REGISTRY_TOKEN_REALM:-}
AUTH_FLAGS=() PUSH_AUTH_FLAGS=()
if [[ -n ${ILP_REGISTRY_AUTHFILE:-} ]]; then
  AUTH_FLAGS=(--authfile "$ILP_REGISTRY_AUTHFILE") PUSH_AUTH_FLAGS=(--dest-authfile "$ILP_REGISTRY_AUTHFILE")
fi
# 2026-01-01T00:00:00Z: every file, layer and history entry of the built images carries it.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

log() { printf '[images] %s\n' "$*" >&2; }
# shellcheck source=deploy/local/daemons.sh
source "$REPO/deploy/local/daemons.sh"

registry_pki() {
  # A server certificate for 127.0.0.1 and localhost from the site CA (or a CA of our own when the
  # site has none: this script run alone on a fresh directory), and the CA where clients look.
  local ca_pem=$SITE/pki/ca.pem ca_key=$SITE/pki/ca.key
  mkdir -p "$REG_DIR/pki" "$CERT_DIR"
  if [[ ! -s $ca_pem || ! -s $ca_key ]]; then
    ca_pem=$REG_DIR/pki/ca.pem ca_key=$REG_DIR/pki/ca.key
    if [[ ! -s $ca_pem ]]; then
      ( umask 077; openssl req -x509 -newkey rsa:2048 -nodes -keyout "$ca_key" -out "$ca_pem" -days 3650 \
          -subj "/CN=interlink-provider local registry CA" 2>/dev/null )
      log "no site CA in $SITE/pki: made one in $REG_DIR/pki"
    fi
  fi
  # Reissued when missing or signed by another CA (the site CA was remade).
  if [[ -s $REG_DIR/pki/registry.pem ]] && openssl verify -CAfile "$ca_pem" "$REG_DIR/pki/registry.pem" >/dev/null 2>&1; then
    cmp -s "$ca_pem" "$CERT_DIR/ca.crt" || install -m 0644 "$ca_pem" "$CERT_DIR/ca.crt"
    return
  fi
  (
    umask 077
    cd "$REG_DIR/pki"
    openssl req -newkey rsa:2048 -nodes -keyout registry.key -out registry.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >registry.ext
    openssl x509 -req -in registry.csr -CA "$ca_pem" -CAkey "$ca_key" -CAcreateserial -CAserial registry.srl \
      -out registry.pem -days 825 -extfile registry.ext 2>/dev/null
  )
  chown "$REG_ACCOUNT" "$REG_DIR/pki/registry.key"
  chmod 0644 "$REG_DIR/pki/registry.pem"
  install -m 0644 "$ca_pem" "$CERT_DIR/ca.crt"
  chmod 0755 "$REG_DIR" "$CERT_DIR"
  chmod 0711 "$REG_DIR/pki"
  log "registry certificate for 127.0.0.1/localhost signed by $ca_pem"
}

registry_up() {  # answers /v2/ (401 when private: it is up all the same)
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CERT_DIR/ca.crt" "https://$REGISTRY/v2/" 2>/dev/null) || true
  [[ $code == 200 || $code == 401 ]]
}

start_registry() {
  if pid_alive "$REG_DIR/registry.pid"; then log "registry already running (https://$REGISTRY)"; return; fi
  id "$REG_ACCOUNT" >/dev/null 2>&1 || { log "no $REG_ACCOUNT account: deploy/local/site.sh install"; return 1; }
  registry_pki
  mkdir -p "$REG_DIR/storage"
  chown "$REG_ACCOUNT" "$REG_DIR/storage"
  cat >"$REG_DIR/config.yml" <<EOF
# Generated by deploy/local/images.sh
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $REG_DIR/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REGISTRY
  tls:
    certificate: $REG_DIR/pki/registry.pem
    key: $REG_DIR/pki/registry.key
EOF
  if [[ -n $HTPASSWD ]]; then
    install -m 0600 -o "$REG_ACCOUNT" "$HTPASSWD" "$REG_DIR/htpasswd"
    printf 'auth:\n  htpasswd:\n    realm: ilp-local\n    path: %s\n' "$REG_DIR/htpasswd" >>"$REG_DIR/config.yml"
  elif [[ -n $TOKEN_REALM ]]; then
    install -m 0644 "$ILP_REGISTRY_TOKEN_CERT" "$REG_DIR/pki/token-issuer.pem"
    install -m 0644 "$ILP_REGISTRY_TOKEN_CA" "$CERT_DIR/token-realm-ca.crt"
    printf 'auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n' \
      "$TOKEN_REALM" "$ILP_REGISTRY_TOKEN_SERVICE" "$ILP_REGISTRY_TOKEN_ISSUER" "$REG_DIR/pki/token-issuer.pem" \
      >>"$REG_DIR/config.yml"
  fi
  touch "$REG_DIR/registry.log"
  chown "$REG_ACCOUNT" "$REG_DIR/registry.log"
  as_account "$REG_ACCOUNT"
  setsid "${AS_ACCOUNT[@]}" /usr/bin/docker-registry serve "$REG_DIR/config.yml" \
    >>"$REG_DIR/registry.log" 2>&1 </dev/null 9>&- &   # not the start lock: it outlives this start
  echo $! >"$REG_DIR/registry.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    registry_up && break
    pid_alive "$REG_DIR/registry.pid" || break
    sleep 0.1
  done
  registry_up || { log "registry did not start:"; tail "$REG_DIR/registry.log" >&2; return 1; }
  log "registry up on https://$REGISTRY (storage $REG_DIR/storage, CA $CERT_DIR/ca.crt)"
}

stop_registry() { stop_pidfile "$REG_DIR/registry.pid" registry; }

in_registry() {  # in_registry REPO:TAG
  skopeo inspect --raw --cert-dir "$CERT_DIR" "${AUTH_FLAGS[@]}" "docker://$REGISTRY/$1" >/dev/null 2>&1
}

busybox_rootfs() {  # busybox_rootfs DIR: /bin/busybox and a link per applet, as Debian's busybox-static has them
  local dir=$1 applet
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/root" "$dir/dev" "$dir/proc" "$dir/sys" "$dir/home"
  install -m 0755 /bin/busybox "$dir/bin/busybox"
  for applet in $(/bin/busybox --list | sort); do
    [[ $applet == busybox ]] || ln -sf busybox "$dir/bin/$applet"
  done
  chmod 1777 "$dir/tmp"
  # ch-run binds the host's account files over these: an image without them does not start.
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

build_image() {  # build_image REPO:TAG ROOTFS CONFIG_FLAGS...: a one-layer image pushed to the registry
  local ref=$1 rootfs=$2 work
  shift 2
  work=$(mktemp -d)
  # Fixed times and owners: the layer's tar is the same bytes wherever it is built.
  find "$rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  chown -hR 0:0 "$rootfs"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:img"
  umoci insert --image "$work/oci:img" --history.created "$CREATED" --history.created_by "deploy/local/images.sh" \
    "$rootfs" /
  umoci config --image "$work/oci:img" --created "$CREATED" --history.created "$CREATED" \
    --history.created_by "deploy/local/images.sh" --os linux --architecture amd64 "$@"
  umoci gc --layout "$work/oci"
  skopeo copy -q --dest-cert-dir "$CERT_DIR" "${PUSH_AUTH_FLAGS[@]}" "oci:$work/oci:img" "docker://$REGISTRY/$ref"
  log "pushed $REGISTRY/$ref ($(skopeo inspect --cert-dir "$CERT_DIR" "${AUTH_FLAGS[@]}" --format '{{.Digest}}' \
    "docker://$REGISTRY/$ref"))"
  rm -rf "$work"
}

host_programs() {  # host_programs ROOTFS FILE...: host programs (or libraries) and the libraries they load
  local root=$1 file lib
  shift
  for file in "$@"; do
    cp -L --parents "$file" "$root/"
    for lib in $(ldd "$file" 2>/dev/null | grep -o '/[^ ]*'); do
      [[ -e $root$lib ]] || cp -L --parents "$lib" "$root/"
    done
  done
}

python_rootfs() {  # python_rootfs DIR: busybox and Debian's python3.11 with its standard library
  local dir=$1
  busybox_rootfs "$dir"
  tar -C / --exclude='__pycache__' --exclude='python3.11/test' --exclude='python3.11/idlelib' \
    --exclude='python3.11/tkinter' --exclude='python3.11/ensurepip' --exclude='python3.11/lib2to3' \
    -cf - usr/lib/python3.11 | tar -C "$dir" -xf -
  host_programs "$dir" /usr/bin/python3.11 "$dir"/usr/lib/python3.11/lib-dynload/*.so
  ln -s python3.11 "$dir/usr/bin/python3"
  ln -s python3.11 "$dir/usr/bin/python"
}

# The images the tests, the examples and interLink's vk-test-set name, under their usual names
# (REPO:TAG, what the rootfs holds, its config): stand-ins built here from Debian's packages, not
# the upstream images. busybox is busybox; python is busybox and Debian's python3.11, and so is
# alpine (the vk-test-set runs python3 in alpine after an `apk add` it lets fail: no apk here);
# nginx is Debian's nginx (nginx-light); cowsay is bash (the vk-test-set runs `/bin/bash -c` in it).
IMAGES=(
  "library/busybox:latest busybox --config.cmd sh"
  "library/busybox:1.36 busybox --config.cmd sh"
  "library/alpine:3 python --config.cmd /bin/sh"
  "library/alpine:3.19 python --config.cmd /bin/sh"
  "ilp/entrypoint:1 entrypoint --config.entrypoint /bin/echo --config.entrypoint from-entrypoint --config.cmd default-arg --config.env GREETING=image --config.workingdir /work"
  "private/entrypoint:1 entrypoint --config.entrypoint /bin/echo --config.entrypoint from-private --config.cmd default-arg"
  "library/python:3.11-alpine python --config.cmd python3"
  "library/python:alpine python --config.cmd python3"
  "library/nginx:alpine nginx --config.cmd nginx"
  "grycap/cowsay:latest bash --config.cmd /bin/bash"
)

rootfs_of() {  # rootfs_of KIND DIR
  local kind=$1 dir=$2
  case $kind in
    busybox) busybox_rootfs "$dir" ;;
    entrypoint) busybox_rootfs "$dir"; mkdir -p "$dir/work" ;;
    python) python_rootfs "$dir" ;;
    nginx) busybox_rootfs "$dir"; host_programs "$dir" /usr/sbin/nginx; mkdir -p "$dir/etc/nginx" "$dir/var/log/nginx" ;;
    bash) busybox_rootfs "$dir"; rm -f "$dir/bin/bash"; host_programs "$dir" /bin/bash ;;
  esac
}

build_images() {
  registry_up || { log "the registry is not up: $0 start"; return 1; }
  local tmp entry ref kind config_text path=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  local -a config
  tmp=$(mktemp -d)
  for entry in "${IMAGES[@]}"; do
    read -r ref kind config_text <<<"$entry"
    if [[ -n ${ILP_REGISTRY_IMAGES:-} && " $ILP_REGISTRY_IMAGES " != *" $ref "* ]]; then
      continue
    fi
    if in_registry "$ref"; then
      log "$ref present"
      continue
    fi
    read -r -a config <<<"${config_text-}"
    rm -rf "$tmp/rootfs"
    rootfs_of "$kind" "$tmp/rootfs"
    build_image "$ref" "$tmp/rootfs" --config.env "$path" "${config[@]}"
  done
  rm -rf "$tmp"
}

status() {
  if pid_alive "$REG_DIR/registry.pid"; then echo "registry running (https://$REGISTRY)"; else echo "registry stopped"; fi
}

case ${1:-} in
  start)
    # One start at a time (test workers start the site at once): the PID check, the certificate
    # and the pushes are not safe to run twice together.
    mkdir -p "$REG_DIR"
    exec 9>"$REG_DIR/start.lock"
    flock 9
    start_registry
    build_images
    ;;
  stop) stop_registry ;;
  status) status ;;
  build) build_images ;;
  env) printf 'export ILP_REGISTRY=%q\nexport ILP_REGISTRY_CERT_DIR=%q\n' "$REGISTRY" "$CERT_DIR" ;;
  *) echo "usage: $0 {start|stop|status|build|env}" >&2; exit 2 ;;
esac
