#!/usr/bin/env bash
# Runs every fuzz target for a short while (30 s each by default; FUZZ_SECONDS to change).
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${FUZZ_SECONDS:-30}"
for target in verify_token verify_mutated verify_differential refresh_token cookies endpoints_json client_ip; do
    echo "fuzz: $target for ${seconds}s"
    cargo +nightly fuzz run --fuzz-dir . "$target" -- -max_total_time="$seconds" -print_final_stats=1
done
