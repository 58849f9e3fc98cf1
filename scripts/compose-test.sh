#!/usr/bin/env bash
# `make test-compose`: deploy/compose.yaml + deploy/compose.cpu.yaml brought up for real with
# podman-compose (PostgreSQL, the coordinator, one CPU worker on a compose network), the digits
# `evaluate` job of scripts/container-job.sh run against it, then `down` (volumes removed).
# Images: those of scripts/container-test.sh (built here when missing). Free host ports are
# published for gRPC and HTTP. Prometheus (profile `monitoring`) is not started.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
: "${NAT_CACHE_DIR:=$HOME/.cache/nat-orchestrator}"
: "${NAT_DATA_DIR:=$NAT_CACHE_DIR/data}"
: "${CARGO_TARGET_DIR:=$NAT_CACHE_DIR/target}"
export NAT_CACHE_DIR NAT_DATA_DIR CARGO_TARGET_DIR
start=$(date +%s)
die() { echo "compose-test: $*" >&2; exit 1; }

eval "$(scripts/container-setup.sh | tail -n1)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
if ! podman --runtime runc image exists "localhost/nat-coordinator:$version" \
    || ! podman --runtime runc image exists "localhost/nat-worker:$version" \
    || [ ! -x target/dist/bin/natctl ]; then
    die "images or target/dist missing: run \`make test-containers\` first"
fi
[ -d "$NAT_DATA_DIR/digits" ] || scripts/fetch-data.sh --only digits "$NAT_DATA_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NAT_GRPC_PORT=$(free_port); NAT_HTTP_PORT=$(free_port)
NAT_DB_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
export NAT_GRPC_PORT NAT_HTTP_PORT NAT_DB_PASSWORD NAT_WORKERS=1 NAT_THREADS=2
project="nat-compose-$$"
compose() {
    podman-compose --podman-args="--runtime runc" -p "$project" \
        -f deploy/compose.yaml -f deploy/compose.cpu.yaml "$@"
}
cleanup() {
    local status=$?
    [ "$status" = 0 ] || compose logs coordinator 2>/dev/null | tail -n 20 >&2 || true
    compose down -v >/dev/null 2>&1 || true
    # podman-compose 1.0 leaves the project network behind.
    podman network rm -f "${project}_default" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

echo "== podman-compose up (postgres, coordinator, worker; gRPC $NAT_GRPC_PORT, HTTP $NAT_HTTP_PORT)"
compose up -d postgres coordinator worker >/dev/null 2>&1 || { compose up -d postgres coordinator worker; exit 1; }
ready=""
for _ in $(seq 1 120); do
    ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NAT_HTTP_PORT/readyz" || true)
    [ "$ready" = 200 ] && break
    sleep 1
done
[ "$ready" = 200 ] || die "the coordinator's /readyz answered '$ready', not 200"
scripts/container-job.sh target/dist/bin/natctl "http://127.0.0.1:$NAT_GRPC_PORT" 600
echo "== compose test passed in $(( $(date +%s) - start )) s"
