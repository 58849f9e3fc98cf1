#!/usr/bin/env bash
# `make demo`: nat-orchestrator end to end on one machine, with the embedded defaults.
#
# Builds the three binaries, starts a coordinator on its default SQLite store and two CPU workers (or
# one worker per GPU when there is one), submits a job that trains the DARTS cell and the cell NAT
# published for it side by side on Fashion-MNIST (the 8x8 digits when apt cannot provide
# Fashion-MNIST), follows it live, prints the before/after table and the genotype diff, then stops
# everything it started. Everything lives in a temporary directory unless NAT_DEMO_DIR is set.
#
#   NAT_DEMO_BUDGET=smoke make demo     # seconds instead of minutes
set -euo pipefail
cd "$(dirname "$0")/.."

: "${NAT_CACHE_DIR:=$HOME/.cache/nat-orchestrator}"
: "${NAT_DATA_DIR:=$NAT_CACHE_DIR/data}"
: "${NAT_DEMO_BUDGET:=small}"
: "${NAT_DEMO_WORKERS:=2}"
export NAT_CACHE_DIR NAT_DATA_DIR

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building (libtorch venv, nat-coordinator, nat-worker, natctl)"
make --no-print-directory build

say "datasets"
dataset=fashion-mnist
if ! scripts/fetch-data.sh --only fashion-mnist "$NAT_DATA_DIR"; then
    echo "Fashion-MNIST is not available here (it comes from Debian's dataset-fashion-mnist package);"
    echo "the demo falls back to the 8x8 digits."
    dataset=digits
fi
[ "$dataset" = digits ] || [ -e "$NAT_DATA_DIR/fashion-mnist" ] || dataset=digits
[ "$dataset" = fashion-mnist ] || scripts/fetch-data.sh --only digits "$NAT_DATA_DIR"

bin=target/release
demo_dir=${NAT_DEMO_DIR:-$(mktemp -d -t nat-demo.XXXXXX)}
mkdir -p "$demo_dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port)
http_port=$(free_port)
export NAT_COORDINATOR="http://127.0.0.1:$grpc_port"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

say "starting nat-coordinator (SQLite in $demo_dir/.nat)"
"$bin/nat-coordinator" --listen "127.0.0.1:$grpc_port" --http-listen "127.0.0.1:$http_port" \
    --data-dir "$demo_dir/.nat" >"$demo_dir/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    "$bin/natctl" jobs >/dev/null 2>&1 && break
    sleep 0.2
done
"$bin/natctl" jobs >/dev/null

cores=$(nproc)
threads=$(( cores / NAT_DEMO_WORKERS )); [ "$threads" -ge 1 ] || threads=1
say "starting $NAT_DEMO_WORKERS nat-worker(s), $threads thread(s) each"
for i in $(seq 1 "$NAT_DEMO_WORKERS"); do
    "$bin/nat-worker" --coordinator "$NAT_COORDINATOR" --data-dir "$NAT_DATA_DIR" --threads "$threads" \
        --name "demo-worker-$i" --checkpoint-dir "$demo_dir/checkpoints-$i" \
        >"$demo_dir/worker-$i.log" 2>&1 &
    pids+=($!)
done

say "submitting: DARTS_V2 and NAT's transformation of it, trained with the '$NAT_DEMO_BUDGET' budget on $dataset"
job=$("$bin/natctl" submit --kind evaluate --arch darts-v2 --arch darts-v2.nat \
    --dataset "$dataset" --budget "$NAT_DEMO_BUDGET" --seed 1 --name demo | tail -n 1)
echo "job $job"
echo "dashboard: http://127.0.0.1:$http_port/   metrics: http://127.0.0.1:$http_port/metrics"

say "progress"
"$bin/natctl" watch "$job"

say "result"
"$bin/natctl" result "$job"

say "what NAT changed (natctl arch diff darts-v2 darts-v2.nat --space nat)"
"$bin/natctl" arch diff darts-v2 darts-v2.nat --space nat
"$bin/natctl" arch show darts-v2.nat --format svg >"$demo_dir/darts-v2.nat.svg"
echo "cell diagram: $demo_dir/darts-v2.nat.svg; logs: $demo_dir/*.log"
say "done; stopping the coordinator and workers"
