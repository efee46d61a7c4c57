#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md, one after the other, into tests/peers/results/:
# the criterion benches (token verification per algorithm, rotation against redis-benchmark
# and against pgbench),
# bytes per session in Redis, and the load benchmark against the peers.
# Installs wrk when missing (Debian). Takes about 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root="$(cd ../.. && pwd)"
out="$PWD/results"
mkdir -p "$out"

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: installing wrk"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "bench: installing redis-server (redis-benchmark comes with it)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi

echo "bench: token verification (criterion)"
(cd "$root" && cargo bench -p baton-bearer --bench verify) | tee "$out/verify.txt"

echo "bench: rotation against redis-benchmark"
(cd "$root" && cargo bench -p baton-redis --bench rotate) | tee "$out/rotate.txt"

echo "bench: rotation on PostgreSQL against pgbench, and bytes per session there"
(cd "$root" && BATON_REQUIRE_POSTGRES=1 cargo bench -p baton-postgres --bench rotate) | tee "$out/rotate-postgres.txt"

echo "bench: bytes per session"
(cd "$root" && BATON_REQUIRE_REDIS=1 cargo test --release -p baton-redis --test redis_only \
    bytes_per_session -- --nocapture) | tee "$out/bytes.txt"

echo "bench: load against the peers"
cargo run --release -- run --out "$out/load.md"
