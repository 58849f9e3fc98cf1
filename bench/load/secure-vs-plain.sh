#!/usr/bin/env bash
# Lease + report round trips through the real nat-coordinator binary, plaintext without auth vs
# TLS + bearer tokens (--auth token --tls-cert/--tls-key), alternately on the same machine, database
# server and load: plain, secure, plain, secure (docs/BENCHMARKS.md, "TLS and tokens").
#
#   bench/load/secure-vs-plain.sh [ROUNDS] [-- nat-load flags]   # default 2 rounds, 200 workers, 6000 tasks
#
# Each run gets a fresh PostgreSQL database on 127.0.0.1:5432 (user postgres), a fresh coordinator
# process (release build) and `nat-load --coordinator URL` driving it; in secure mode the load
# generator's clients use https:// with the test CA and an admin token (it both submits jobs and
# acts as the workers), created with `nat-coordinator token create`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
: "${NAT_CACHE_DIR:=$HOME/.cache/nat-orchestrator}"
: "${CARGO_TARGET_DIR:=$NAT_CACHE_DIR/target}"
export CARGO_TARGET_DIR
rounds="${1:-2}"
shift || true
[ "${1:-}" = "--" ] && shift
load_flags=("$@")
[ ${#load_flags[@]} -gt 0 ] || load_flags=(--workers 200 --tasks 6000 --connections 16)

cargo build --release -q -p nat-coordinator -p nat-load-bench
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
coordinator_pid=""
cleanup() {
    [ -n "$coordinator_pid" ] && kill "$coordinator_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A CA and a server certificate for localhost (openssl, P-256).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -copy_extensions copy -out "$work/tls.pem" 2>/dev/null

psql_admin() { psql -q -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }

run_one() {
    local mode="$1" round="$2"
    local db="nat_bench_${mode}_${round}_$$"
    local url="postgres://postgres@127.0.0.1:5432/$db"
    psql_admin "CREATE DATABASE $db"
    local flags=(--database-url "$url" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0
        --lease-seconds 300)
    local client=()
    local scheme=http
    if [ "$mode" = secure ]; then
        local token
        token="$("$bin/nat-coordinator" token create --role admin --name bench \
            --database-url "$url" 2>/dev/null)"
        flags+=(--auth token --tls-cert "$work/tls.pem" --tls-key "$work/tls.key")
        client=(--ca-cert "$work/ca.pem" --token "$token")
        scheme=https
    fi
    RUST_LOG=warn "$bin/nat-coordinator" "${flags[@]}" >"$work/out" 2>"$work/err" &
    coordinator_pid=$!
    local grpc=""
    for _ in $(seq 100); do
        grpc="$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$work/out")"
        [ -n "$grpc" ] && break
        sleep 0.1
    done
    [ -n "$grpc" ] || { cat "$work/err" >&2; exit 1; }
    echo "== $mode (round $round): $scheme://localhost:${grpc##*:}"
    "$bin/nat-load" --coordinator "$scheme://localhost:${grpc##*:}" "${client[@]}" \
        "${load_flags[@]}" | grep -E "round_trips_per_s|lease_ms|report_ms|steady"
    kill "$coordinator_pid"
    wait "$coordinator_pid" 2>/dev/null || true
    coordinator_pid=""
    psql_admin "DROP DATABASE IF EXISTS $db WITH (FORCE)"
}

echo "cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1) × $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty); nat-load ${load_flags[*]}"
for round in $(seq "$rounds"); do
    run_one plain "$round"
    run_one secure "$round"
done
