#!/usr/bin/env bash
# Installs the client matrix (tests/client_matrix.rs; also used by tests/cache_viem.rs and
# loadtest/scripts/indexer_pull.sh): npm packages of tests/clients (anvil, cast, ethers, viem, ponder;
# versions from tests/clients/package-lock.json) and a Python venv at tests/clients/.venv with web3.py
# (tests/clients/requirements.txt, exact versions). Idempotent; reaches only npm and PyPI (and Debian's packages when
# python3's venv module is missing). Called once by .ci/run; run it by hand before `cargo test --test client_matrix`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
printf '\n==================== install the client matrix: .ci/clients.sh ====================\n'
clients=tests/clients
die() {
  printf '.ci/clients.sh: error: %s\n' "$*" >&2
  exit 1
}

command -v python3 >/dev/null || die "python3 not found (web3.py needs CPython >= 3.10)"
# Debian's python3 keeps venv (ensurepip) in a separate package.
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  pkg="python3-venv"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "$pkg"
fi

npm ci --prefix "$clients" --no-audit --no-fund
for bin in anvil cast; do
  exe="$clients/node_modules/@foundry-rs/$bin-linux-amd64/bin/$bin"
  [ -x "$exe" ] || die "npm ci did not install $bin ($exe)"
  "$exe" --version | head -1
done
[ -f "$clients/node_modules/ponder/dist/esm/bin/ponder.js" ] || die "npm ci did not install ponder"
echo "ponder $(node -p "require('./$clients/node_modules/ponder/package.json').version")"

if [ ! -x "$clients/.venv/bin/python" ]; then
  python3 -m venv "$clients/.venv"
fi
"$clients/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  -r "$clients/requirements.txt"
"$clients/.venv/bin/python" -c 'import web3; print("web3.py", web3.__version__)'
