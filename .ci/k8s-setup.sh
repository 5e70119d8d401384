#!/usr/bin/env bash
# Install what the Kubernetes tests need and build the control-plane binaries.
#
# Produces (cached, reused when present):
#   ~/.cache/gmrun-k8s/bin/kube-apiserver
#   ~/.cache/gmrun-k8s/bin/kube-controller-manager
#   ~/.cache/gmrun-k8s/bin/kubectl
# and installs etcd (Debian package etcd-server -> /usr/bin/etcd).
#
# The binaries are built from the Debian bookworm `kubernetes` *source* package
# (Debian does not ship kube-apiserver as a binary package). A cold build takes
# ~10 minutes on 2 cores; with the cache present the script finishes in seconds.
#
# Usage (CI):  bash .ci/k8s-setup.sh        # run as root, or with passwordless sudo
#              (concurrent runs are serialised by a lock on $CACHE/.lock)
# Env:         GMRUN_K8S_CACHE  override the cache dir (default ~/.cache/gmrun-k8s)
#              GMRUN_K8S_FORCE=1 rebuild even if the binaries exist
set -euo pipefail

CACHE="${GMRUN_K8S_CACHE:-$HOME/.cache/gmrun-k8s}"
BIN="$CACHE/bin"
WANT=(kube-apiserver kube-controller-manager kubectl)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

log() { echo "[k8s-setup] $*" >&2; }

# One setup at a time per cache: two `make test` runs on one machine would otherwise build into
# the same folder at once. The second waits, then finds the binaries cached.
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  log "another k8s-setup holds $CACHE/.lock: waiting for it"
  flock 9
fi

have_bins() {
  for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
if [ "${GMRUN_K8S_FORCE:-0}" = 1 ] || ! have_bins; then
  command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
  command -v rsync >/dev/null 2>&1 || need_pkgs+=(rsync)
  command -v make >/dev/null 2>&1 || need_pkgs+=(make)
  command -v dpkg-source >/dev/null 2>&1 || need_pkgs+=(dpkg-dev)
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing apt packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

if [ "${GMRUN_K8S_FORCE:-0}" != 1 ] && have_bins; then
  log "binaries cached in $BIN"
  exit 0
fi

# --- deb-src for the kubernetes source package ---------------------------------
if ! apt-get source --download-only --print-uris kubernetes >/dev/null 2>&1 \
   || [ -z "$(apt-get source --print-uris kubernetes 2>/dev/null | grep -F .orig)" ]; then
  log "adding deb-src entries"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # deb822 format: duplicate the stanzas as deb-src
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      | $SUDO tee /etc/apt/sources.list.d/gmrun-debsrc.sources >/dev/null
  else
    grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | sed 's/^deb /deb-src /' \
      | $SUDO tee /etc/apt/sources.list.d/gmrun-debsrc.list >/dev/null
  fi
  $SUDO apt-get update -qq
fi

mkdir -p "$CACHE" "$BIN"
WORK="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
log "downloading kubernetes source package into $WORK"
apt-get source --download-only kubernetes >/dev/null
ORIG="$(ls kubernetes_*.orig.tar.* | head -n1)"
mkdir src
tar -xf "$ORIG" -C src --strip-components=1
cd src
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes

log "building ${WANT[*]} (this takes several minutes)"
start=$(date +%s)
targets=""
for b in "${WANT[@]}"; do targets="$targets cmd/$b"; done
GOPATH="$PWD/.go" GOFLAGS="" CGO_ENABLED=0 \
  make WHAT="${targets# }" >&2
for b in "${WANT[@]}"; do
  f="$(find _output -type f -name "$b" -perm -u+x | head -n1)"
  [ -n "$f" ] || { log "build did not produce $b"; exit 1; }
  install -m 0755 "$f" "$BIN/$b"
done
log "built in $(( $(date +%s) - start ))s -> $BIN"
"$BIN/kube-apiserver" --version >&2 || true
