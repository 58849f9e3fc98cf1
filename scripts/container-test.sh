#!/usr/bin/env bash
# `make test-containers`: builds the coordinator and worker images and runs a real job in them.
#
#   scripts/container-test.sh
#
# 1. scripts/container-setup.sh: podman etc., the base images, deploy/container/containers.conf;
# 2. release binaries (`make build`, up to date), the relocatable install in target/dist
#    (scripts/install.sh), then both images from deploy/Dockerfile.{coordinator,worker}
#    (target `prebuilt`), and `nat-worker doctor` in the worker image;
# 3. PostgreSQL (the postgres:15-bookworm image or its local stand-in), the coordinator and two CPU
#    workers, all `--network=host` on free ports, the datasets mounted read-only from
#    $NAT_DATA_DIR (default ~/.cache/nat-orchestrator/data);
# 4. an `evaluate` job on the 8x8 digits (two architectures, smoke budget) submitted with natctl
#    from the host; its result (`natctl result --json`) must show both architectures succeeded with
#    an accuracy in (0, 1], trained by the two containers; /readyz must answer 200.
# Everything it starts is removed on exit. Prints the time of each phase.
# Environment: NAT_CACHE_DIR, NAT_DATA_DIR, CARGO_TARGET_DIR, NAT_CONTAINER_TIMEOUT (job, seconds, 600).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
: "${NAT_CACHE_DIR:=$HOME/.cache/nat-orchestrator}"
: "${NAT_DATA_DIR:=$NAT_CACHE_DIR/data}"
: "${CARGO_TARGET_DIR:=$NAT_CACHE_DIR/target}"
: "${NAT_CONTAINER_TIMEOUT:=600}"
export NAT_CACHE_DIR NAT_DATA_DIR CARGO_TARGET_DIR
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
coordinator_image="localhost/nat-coordinator:$version"
worker_image="localhost/nat-worker:$version"
postgres_image="docker.io/library/postgres:15-bookworm"

start=$(date +%s)
phase_start=$start
say() { printf '\n== %s\n' "$*"; }
phase() { local now; now=$(date +%s); echo "   ($(( now - phase_start )) s)"; phase_start=$now; }
die() { echo "container-test: $*" >&2; exit 1; }

say "set-up (podman, base images, containers.conf)"
eval "$(scripts/container-setup.sh | tail -n1)"
pm() { podman --runtime runc "$@"; }
phase

say "binaries and the relocatable install (target/dist)"
# Always through cargo: it rebuilds what changed since the last release build (nothing when the
# binaries are current; ~11 min on 2 cores from scratch), so the images never carry stale binaries.
make --no-print-directory build
scripts/install.sh target/dist "$CARGO_TARGET_DIR/release"
natctl=target/dist/bin/natctl
phase

say "images"
pm build -q --network=host -f deploy/Dockerfile.coordinator \
    --ignorefile deploy/Dockerfile.coordinator.dockerignore -t "$coordinator_image" . >/dev/null
pm build -q --network=host -f deploy/Dockerfile.worker \
    --ignorefile deploy/Dockerfile.worker.dockerignore -t "$worker_image" . >/dev/null
pm images --format '   {{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'nat-(coordinator|worker)'
# The worker image's libtorch loads and computes, as a non-root user with no build tree.
pm run --rm --network=none "$worker_image" doctor | sed 's/^/   /'
[ "$(pm run --rm --network=none --entrypoint id "$coordinator_image" -u)" = 10001 ] \
    || die "the coordinator image does not run as uid 10001"
phase

say "datasets ($NAT_DATA_DIR)"
[ -d "$NAT_DATA_DIR/digits" ] || scripts/fetch-data.sh --only digits "$NAT_DATA_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port); grpc_port=$(free_port); http_port=$(free_port)
tag="nat-ct-$$"
containers=()
cleanup() {
    local status=$?
    if [ "$status" != 0 ]; then
        for name in "${containers[@]}"; do
            echo "--- last log lines of $name" >&2
            pm logs --tail 15 "$name" >&2 2>/dev/null || true
        done
    fi
    for name in "${containers[@]}"; do pm rm -f -t 5 "$name" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT INT TERM

say "PostgreSQL, coordinator, two workers (ports: postgres $pg_port, gRPC $grpc_port, HTTP $http_port)"
password="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
pm run -d --name "$tag-postgres" --network=host -e POSTGRES_USER=nat -e POSTGRES_DB=nat \
    -e POSTGRES_PASSWORD="$password" -e PGPORT="$pg_port" "$postgres_image" >/dev/null
containers+=("$tag-postgres")
for _ in $(seq 1 60); do
    pm exec "$tag-postgres" pg_isready -q -U nat -h 127.0.0.1 -p "$pg_port" && break
    sleep 1
done
pm exec "$tag-postgres" pg_isready -q -U nat -h 127.0.0.1 -p "$pg_port" || die "PostgreSQL did not start"

pm run -d --name "$tag-coordinator" --network=host \
    -e NAT_DATABASE_URL="postgres://nat:$password@127.0.0.1:$pg_port/nat" \
    -e NAT_LISTEN="127.0.0.1:$grpc_port" -e NAT_HTTP_LISTEN="127.0.0.1:$http_port" \
    "$coordinator_image" >/dev/null
containers+=("$tag-coordinator")
ready=""
for _ in $(seq 1 60); do
    ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/readyz" || true)
    [ "$ready" = 200 ] && break
    sleep 0.5
done
[ "$ready" = 200 ] || die "the coordinator's /readyz answered '$ready', not 200"
echo "   coordinator ready (/readyz 200)"

metrics_ports=()
for i in 1 2; do
    metrics_ports+=("$(free_port)")
    pm run -d --name "$tag-worker-$i" --network=host -v "$NAT_DATA_DIR:/data:ro" \
        -e NAT_COORDINATOR="http://127.0.0.1:$grpc_port" -e NAT_DEVICES=cpu -e NAT_THREADS=1 \
        -e NAT_WORKER_NAME="$tag-worker-$i" -e NAT_METRICS_LISTEN="127.0.0.1:${metrics_ports[-1]}" \
        "$worker_image" >/dev/null
    containers+=("$tag-worker-$i")
done
export NAT_COORDINATOR="http://127.0.0.1:$grpc_port"
phase

say "evaluate job on the digits"
scripts/container-job.sh "$natctl" "$NAT_COORDINATOR" "$NAT_CONTAINER_TIMEOUT"
# Both workers registered with the coordinator; their own /metrics count the tasks they ran.
alive=$("$natctl" workers -o json | python3 -c '
import json, sys
print(sum(1 for w in json.load(sys.stdin) if w["name"].startswith(sys.argv[1]) and w["alive"]))' "$tag")
[ "$alive" = 2 ] || die "$alive of the 2 worker containers are registered and alive"
ran=()
for port in "${metrics_ports[@]}"; do
    ran+=("$(curl -s "http://127.0.0.1:$port/metrics" \
        | awk '/^nat_worker_task_duration_seconds_count/ { n += $2 } END { print n + 0 }')")
done
echo "   tasks run per worker container: ${ran[*]}"
[ $(( ran[0] + ran[1] )) -ge 2 ] || die "the workers' metrics count $(( ran[0] + ran[1] )) tasks, not 2"
phase

say "container test passed in $(( $(date +%s) - start )) s"
