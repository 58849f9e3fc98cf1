#!/usr/bin/env bash
# Supernet rewards per hour with 1 and with 2 CPU workers (issue #14, item 5), measured in one run.
#
# For each fleet size, alternating (1, 2, 1, 2, ...), this starts a fresh nat-coordinator (SQLite)
# and N nat-worker processes with one libtorch thread each, submits the same supernet optimize job
# and reads its events. The rate is taken between the first and the last policy update, so the
# warm-up, derive and the final evaluation are left out:
#   rewards/hour = (updates - 1) * M / (t_last_update - t_first_update)
# With N workers every round has N shards (`shards: auto`), each scoring M/N of the round's pairs
# with `train_steps_between_pairs` steps before each (the paper's alternation) after
# `steps_per_shard` steps from the round's weight version.
#
# Usage: scripts/bench-supernet-fleet.sh [REPEATS]   (default 2; needs `make build` and `make data`)
# Knobs: NAT_BENCH_DATASET (fashion-mnist), NAT_BENCH_ROUNDS (8), NAT_BENCH_PAIRS (8),
#        NAT_BENCH_STEPS (2: steps before each pair), NAT_BENCH_SHARD_STEPS (4: steps per shard).
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${1:-2}
dataset=${NAT_BENCH_DATASET:-fashion-mnist}
rounds=${NAT_BENCH_ROUNDS:-8}
pairs=${NAT_BENCH_PAIRS:-8}
steps=${NAT_BENCH_STEPS:-2}
shard_steps=${NAT_BENCH_SHARD_STEPS:-4}
NAT_CACHE_DIR=${NAT_CACHE_DIR:-$HOME/.cache/nat-orchestrator}
NAT_DATA_DIR=${NAT_DATA_DIR:-$NAT_CACHE_DIR/data}
bin=target/release
for b in nat-coordinator nat-worker natctl; do
    [ -x "$bin/$b" ] || { echo "bench-supernet-fleet: $bin/$b missing: run \`make build\` first" >&2; exit 1; }
done
[ -e "$NAT_DATA_DIR/$dataset" ] || { echo "bench-supernet-fleet: $NAT_DATA_DIR/$dataset missing: run \`make data\`" >&2; exit 1; }

work=$(mktemp -d -t nat-bench-fleet.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT INT TERM

cat >"$work/job.yaml" <<YAML
kind: optimize
name: fleet-bench
dataset: $dataset
architectures: [darts-v2]
seed: 7
budget:
  preset: smoke
  epochs: 1
  max_train_examples: 256
  max_eval_examples: 256
optimize:
  reward: supernet
  iterations: $rounds
  samples_per_iteration: $pairs
  derive_samples: 1
  derive_top_k: 1
  final_seeds: 1
  supernet:
    init_channels: 8
    layers: 5
    batch_size: 64
    train_steps_between_pairs: $steps
    steps_per_shard: $shard_steps
    warmup_steps: 4
    max_train_examples: 6000
    validation_fraction: 0.1
    eval_batches: 1
    shards: auto
YAML

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "CPU: ${cpu:-unknown}, $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "job: $rounds rounds x $pairs pairs on $dataset (C=8, 5 cells, batch 64, $steps steps per pair, $shard_steps per shard)"
printf '%-4s %-8s %-9s %-12s %-14s %s\n' run workers updates seconds rewards/hour load
results=()
run=0
for rep in $(seq 1 "$repeats"); do
    for n in 1 2; do
        run=$((run + 1))
        dir="$work/run-$run"
        mkdir -p "$dir"
        grpc=$(free_port); http=$(free_port)
        export NAT_COORDINATOR="http://127.0.0.1:$grpc"
        "$bin/nat-coordinator" --listen "127.0.0.1:$grpc" --http-listen "127.0.0.1:$http" \
            --data-dir "$dir/.nat" >"$dir/coordinator.log" 2>&1 &
        pids+=($!)
        for _ in $(seq 1 100); do "$bin/natctl" jobs >/dev/null 2>&1 && break; sleep 0.2; done
        for i in $(seq 1 "$n"); do
            "$bin/nat-worker" --coordinator "$NAT_COORDINATOR" --data-dir "$NAT_DATA_DIR" --threads 1 \
                --name "bench-$run-$i" --checkpoint-dir "$dir/checkpoints-$i" \
                --metrics-listen "127.0.0.1:$(free_port)" >"$dir/worker-$i.log" 2>&1 &
            pids+=($!)
        done
        # Every worker registered before the job: one shard per worker.
        for _ in $(seq 1 150); do
            [ "$("$bin/natctl" workers -o json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)" -ge "$n" ] && break
            sleep 0.2
        done
        id=$("$bin/natctl" submit -f "$work/job.yaml" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
        "$bin/natctl" watch "$id" -o json >"$dir/events.jsonl" || echo "job $id did not succeed (see $dir)" >&2
        line=$(python3 - "$dir/events.jsonl" "$pairs" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
m = int(sys.argv[2])
ups = [e["at_unix_ms"] for e in events if e["type"] == "policy_updated"]
state = [e["state"] for e in events if e["type"] == "state_changed"][-1:]
if len(ups) < 2:
    print(f"0 0 0 {state}")
else:
    secs = (ups[-1] - ups[0]) / 1000
    print(f"{len(ups)} {secs:.1f} {(len(ups) - 1) * m / secs * 3600:.0f} {state}")
PY
)
        read -r updates seconds rate _ <<<"$line"
        printf '%-4s %-8s %-9s %-12s %-14s %s\n' "$run" "$n" "$updates" "$seconds" "$rate" "$(cut -d' ' -f1 /proc/loadavg)"
        results+=("$n $rate")
        stop_all
    done
done
python3 - "${results[@]}" <<'PY'
import statistics, sys
by = {}
for r in sys.argv[1:]:
    n, rate = r.split()
    by.setdefault(int(n), []).append(float(rate))
one, two = statistics.median(by[1]), statistics.median(by[2])
print(f"median rewards/hour: 1 worker {one:.0f}, 2 workers {two:.0f}; ratio {two / one:.2f}x")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); logs in $work"
