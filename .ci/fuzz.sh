#!/usr/bin/env bash
# Fuzz smoke run: builds the cargo-fuzz targets in fuzz/ and runs each for FUZZ_SECONDS (default 30) on its committed
# corpus (fuzz/corpus/<target>/), failing on any crash. Installs cargo-fuzz if missing (crates.io).
# cargo-fuzz passes nightly-only flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Sanitizer: none (an ASan build of the whole dependency tree is too slow for CI on 2 cores; libFuzzer still
# catches panics, overflows checked by debug assertions, and assertion failures in the targets).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-30}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

start=$(date +%s)
cargo fuzz build --sanitizer none
echo "fuzz build: $(($(date +%s) - start)) s"

for target in $(cargo fuzz list); do
  scratch="$(mktemp -d)"
  # New inputs go to a scratch dir (the committed corpus is read, never grown); crashes to fuzz/artifacts/<target>/.
  cargo fuzz run --sanitizer none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$scratch.log" 2>&1 &&
    status=0 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)|SUMMARY|panicked' "$scratch.log" |
    sed "s/^/$target: /" || true
  [ "$status" -eq 0 ] || tail -40 "$scratch.log" >&2
  rm -rf "$scratch" "$scratch.log"
  [ "$status" -eq 0 ] || { echo "fuzz: $target failed (see fuzz/artifacts/$target/)" >&2; exit 1; }
done
echo "fuzz: all targets ran ${seconds} s without a crash ($(($(date +%s) - start)) s total)"
