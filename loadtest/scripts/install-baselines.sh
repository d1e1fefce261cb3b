#!/usr/bin/env bash
# Installs the baselines that `lasso-bench` runs side by side with Lasso:
#   - nginx and wrk (Debian packages), when missing (needs root for apt-get);
#   - blutgang 0.3.6 from crates.io into loadtest/.tools (cargo install --locked, feature `no-cache` so that its
#     response cache is compiled out and every request reaches the upstream, as Lasso's do).
#
# Usage:  bash loadtest/scripts/install-baselines.sh            # nginx + wrk + blutgang
#         SKIP_BLUTGANG=1 bash loadtest/scripts/install-baselines.sh   # only the Debian packages
# Env:    TOOLS_DIR=dir   cargo install root (default loadtest/.tools; the binary lands in $TOOLS_DIR/bin/blutgang)
#         BLUTGANG_JOBS=N cargo build jobs for blutgang (default: all cores; it is built at nice 10)
#
# Idempotent: skips what is already installed. blutgang builds from source (about 10-15 min on 2 cores); lasso-bench's
# `quick` scenario includes it only when $TOOLS_DIR/bin/blutgang exists and says so in its table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/loadtest/.tools}"
BLUTGANG_VERSION="0.3.6"

log() { printf '[install-baselines] %s\n' "$*" >&2; }
die() { printf '[install-baselines] error: %s\n' "$*" >&2; exit 1; }

apt_install() {
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $* (or install them yourself)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" </dev/null; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends "$@" </dev/null
  fi
}

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt_install "${need[@]}"
else
  log "nginx, wrk and taskset already installed"
fi

if [ "${SKIP_BLUTGANG:-0}" = 1 ]; then
  log "SKIP_BLUTGANG=1: not installing blutgang"
  exit 0
fi

if [ -x "$TOOLS_DIR/bin/blutgang" ] && "$TOOLS_DIR/bin/blutgang" --version 2>/dev/null | grep -q "$BLUTGANG_VERSION"; then
  log "blutgang $BLUTGANG_VERSION already installed at $TOOLS_DIR/bin/blutgang"
  exit 0
fi

command -v cargo >/dev/null || die "cargo not found"
log "cargo install blutgang --version $BLUTGANG_VERSION --locked --features no-cache --root $TOOLS_DIR (takes a while)"
mkdir -p "$TOOLS_DIR"
# A separate target dir keeps this build out of the workspace's target/.
CARGO_TARGET_DIR="$TOOLS_DIR/target" nice -n 10 cargo install blutgang --version "$BLUTGANG_VERSION" --locked \
  --features no-cache --root "$TOOLS_DIR" ${BLUTGANG_JOBS:+--jobs "$BLUTGANG_JOBS"}
rm -rf "$TOOLS_DIR/target"
[ -x "$TOOLS_DIR/bin/blutgang" ] || die "blutgang not found at $TOOLS_DIR/bin/blutgang after cargo install"
log "installed $("$TOOLS_DIR/bin/blutgang" --version 2>&1 | head -1) at $TOOLS_DIR/bin/blutgang"
