#!/usr/bin/env bash
# `make results`: regenerates docs/RESULTS.md end to end — NAT with the paper's supernet reward on
# Fashion-MNIST, judged by an independent final evaluation.
#
# Two optimize jobs run on one coordinator and a fleet of real `nat-worker` processes:
#   - NAT (v1: op -> same/skip/null) on the hand-crafted VGG and ResNet blocks, one policy learning
#     on both inputs (the paper's null -> skip moves of its hand-crafted results);
#   - NAT++ (op -> same/skip/null or a cheaper op) on DARTS_V2.
# Each job learns from at least NAT_RESULTS_REWARDS supernet rewards acc(alpha) - acc(beta) measured
# on its own durable supernet (rounds sharded across the workers), screens NAT_RESULTS_DERIVE_SAMPLES
# candidates per input on the supernet, trains the top NAT_RESULTS_TOP_K from scratch, and runs the
# random control (the same derive on uniform samples of the space). The final evaluation trains the
# original, the policy's pick and the control's pick from scratch on NAT_RESULTS_SEEDS paired seeds
# that no earlier step used, measured on the test split; the verdicts come from the paired
# differences. scripts/results_table.py renders the markdown from the saved `natctl result --json`
# documents and the jobs' event streams (`natctl watch -o json`).
#
# Store: a fresh PostgreSQL database when PostgreSQL answers on 127.0.0.1:5432 (kept afterwards unless
# NAT_RESULTS_DROP_DB=1), else the embedded SQLite store.
#
# Knobs (environment; defaults sized for about 90 minutes on a 2-core machine):
#   NAT_RESULTS_DATABASE_URL   sqlite | postgres://… (used as is, not created or dropped) | unset
#   NAT_RESULTS_WORKERS        2          worker processes (libtorch threads each: nproc / workers, >= 1)
#   NAT_RESULTS_REWARDS        2048       supernet rewards per policy (rounded up to whole rounds)
#   NAT_RESULTS_SAMPLES        32         (beta, alpha) pairs per learning round = per policy update
#   NAT_RESULTS_NAT_CELLS      vgg-block,resnet-block   inputs of the NAT (v1) policy ("" = no such job)
#   NAT_RESULTS_NATPP_CELLS    darts-v2                 inputs of the NAT++ policy ("" = no such job)
#   NAT_RESULTS_SEEDS          5          paired seeds of the final evaluation
#   NAT_RESULTS_DERIVE_SAMPLES 100        candidates per input screened on the supernet (policy and control)
#   NAT_RESULTS_TOP_K          3          of those, trained from scratch with the derive budget
#   NAT_RESULTS_CONTROL        random     random | none: the random control
#   the supernet the rewards are measured on:
#   NAT_RESULTS_SN_CHANNELS    8          initial channels C
#   NAT_RESULTS_SN_LAYERS      5          cells
#   NAT_RESULTS_SN_BATCH       64         minibatch of w-training and of scoring a pair
#   NAT_RESULTS_SN_STEPS       1          SGD steps on random beta before each scored pair
#   NAT_RESULTS_SN_SHARD_STEPS 2          SGD steps each shard trains from the round's weight version
#   NAT_RESULTS_SN_WARMUP      400        warm-up steps into weight version 1
#   NAT_RESULTS_SN_TRAIN_EXAMPLES 6000    training images of w (the pairs are scored on 10 % held out)
#   NAT_RESULTS_SN_DERIVE_EXAMPLES 500    validation images each derive candidate is scored on
#   derive (the top-k from scratch, validation split) and final evaluation (test split):
#   NAT_RESULTS_DERIVE_EPOCHS  1          derive: epochs
#   NAT_RESULTS_DERIVE_TRAIN_EXAMPLES 2000  derive: training images (10 % of them held out, <= 1000)
#   NAT_RESULTS_EPOCHS         2          final: epochs
#   NAT_RESULTS_TRAIN_EXAMPLES 6000       final: training images (0 = all 60,000)
#   NAT_RESULTS_EVAL_EXAMPLES  5000       final: test images (0 = all 10,000)
#   NAT_RESULTS_CHANNELS       8          derive and final: initial channels C
#   NAT_RESULTS_LAYERS         3          derive and final: cells L
#   NAT_RESULTS_TIMEOUT        10800      seconds before a job counts as stuck
#   NAT_RESULTS_DIR            a new temporary directory: logs, job files, JSON results
#   NAT_RESULTS_BIN            use the three binaries in this directory instead of `make build`
#   NAT_RESULTS_COMMIT         the commit those binaries were built from (recorded in the document)
#   NAT_RESULTS_OUT            docs/RESULTS.md
set -euo pipefail
cd "$(dirname "$0")/.."

: "${NAT_CACHE_DIR:=$HOME/.cache/nat-orchestrator}"
: "${NAT_DATA_DIR:=$NAT_CACHE_DIR/data}"
export NAT_CACHE_DIR NAT_DATA_DIR
: "${NAT_RESULTS_WORKERS:=2}"
: "${NAT_RESULTS_REWARDS:=2048}"
: "${NAT_RESULTS_SAMPLES:=32}"
: "${NAT_RESULTS_NAT_CELLS=vgg-block,resnet-block}"
: "${NAT_RESULTS_NATPP_CELLS=darts-v2}"
: "${NAT_RESULTS_SEEDS:=5}"
: "${NAT_RESULTS_DERIVE_SAMPLES:=100}"
: "${NAT_RESULTS_TOP_K:=3}"
: "${NAT_RESULTS_CONTROL:=random}"
: "${NAT_RESULTS_SN_CHANNELS:=8}"
: "${NAT_RESULTS_SN_LAYERS:=5}"
: "${NAT_RESULTS_SN_BATCH:=64}"
: "${NAT_RESULTS_SN_STEPS:=1}"
: "${NAT_RESULTS_SN_SHARD_STEPS:=2}"
: "${NAT_RESULTS_SN_WARMUP:=400}"
: "${NAT_RESULTS_SN_TRAIN_EXAMPLES:=6000}"
: "${NAT_RESULTS_SN_DERIVE_EXAMPLES:=500}"
: "${NAT_RESULTS_DERIVE_EPOCHS:=1}"
: "${NAT_RESULTS_DERIVE_TRAIN_EXAMPLES:=2000}"
: "${NAT_RESULTS_EPOCHS:=2}"
: "${NAT_RESULTS_TRAIN_EXAMPLES:=6000}"
: "${NAT_RESULTS_EVAL_EXAMPLES:=5000}"
: "${NAT_RESULTS_CHANNELS:=8}"
: "${NAT_RESULTS_LAYERS:=3}"
: "${NAT_RESULTS_TIMEOUT:=10800}"
: "${NAT_RESULTS_OUT:=docs/RESULTS.md}"
: "${NAT_RESULTS_DROP_DB:=0}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "results: $*" >&2; exit 1; }
now() { date +%s; }
utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }
for knob in NAT_RESULTS_WORKERS NAT_RESULTS_REWARDS NAT_RESULTS_SAMPLES NAT_RESULTS_SEEDS \
    NAT_RESULTS_DERIVE_SAMPLES NAT_RESULTS_TOP_K NAT_RESULTS_SN_CHANNELS NAT_RESULTS_SN_LAYERS \
    NAT_RESULTS_SN_BATCH NAT_RESULTS_SN_STEPS NAT_RESULTS_SN_SHARD_STEPS NAT_RESULTS_SN_WARMUP \
    NAT_RESULTS_DERIVE_EPOCHS NAT_RESULTS_EPOCHS NAT_RESULTS_CHANNELS NAT_RESULTS_LAYERS \
    NAT_RESULTS_TIMEOUT; do
    [ "${!knob}" -ge 1 ] 2>/dev/null || die "$knob must be a positive integer, got '${!knob}'"
done
for knob in NAT_RESULTS_SN_TRAIN_EXAMPLES NAT_RESULTS_SN_DERIVE_EXAMPLES NAT_RESULTS_DERIVE_TRAIN_EXAMPLES \
    NAT_RESULTS_TRAIN_EXAMPLES NAT_RESULTS_EVAL_EXAMPLES; do
    [ "${!knob}" -ge 0 ] 2>/dev/null || die "$knob must be a whole number (0 = all), got '${!knob}'"
done
case "$NAT_RESULTS_CONTROL" in random|none) ;; *) die "NAT_RESULTS_CONTROL must be random or none, got '$NAT_RESULTS_CONTROL'" ;; esac
[ -n "$NAT_RESULTS_NAT_CELLS$NAT_RESULTS_NATPP_CELLS" ] \
    || die "NAT_RESULTS_NAT_CELLS and NAT_RESULTS_NATPP_CELLS are both empty: no job to run"
iterations=$(( (NAT_RESULTS_REWARDS + NAT_RESULTS_SAMPLES - 1) / NAT_RESULTS_SAMPLES ))

started_utc=$(utc)
t_start=$(now)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

if [ -n "${NAT_RESULTS_BIN:-}" ]; then
    say "using the binaries in $NAT_RESULTS_BIN (NAT_RESULTS_BIN; no build)"
    for b in nat-coordinator nat-worker natctl; do
        [ -x "$NAT_RESULTS_BIN/$b" ] || die "NAT_RESULTS_BIN: $NAT_RESULTS_BIN/$b is not an executable"
    done
    bin=$(cd "$NAT_RESULTS_BIN" && pwd)
else
    say "building (libtorch venv, nat-coordinator, nat-worker, natctl)"
    make --no-print-directory build
    bin=$PWD/target/release
fi
say "dataset: Fashion-MNIST"
scripts/fetch-data.sh --only fashion-mnist "$NAT_DATA_DIR" \
    || die "Fashion-MNIST is not available here (Debian's dataset-fashion-mnist); the table is defined on it"
t_setup_done=$(now)

natctl() { "$bin/natctl" "$@"; }
run_dir=${NAT_RESULTS_DIR:-$(mktemp -d -t nat-results.XXXXXX)}
mkdir -p "$run_dir/jobs" "$run_dir/results"
run_dir=$(cd "$run_dir" && pwd)
echo "run directory: $run_dir"

# ---- the store -------------------------------------------------------------------------------
pg_up() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }
db_url=${NAT_RESULTS_DATABASE_URL:-}
created_db=""
if [ -z "$db_url" ]; then
    if pg_up; then
        created_db="nat_results_$(date -u +%Y%m%d_%H%M%S)"
        createdb -h 127.0.0.1 -p 5432 -U postgres "$created_db"
        db_url="postgres://postgres@127.0.0.1:5432/$created_db"
    else
        echo "PostgreSQL does not answer on 127.0.0.1:5432 (scripts/ensure-postgres.sh starts it); using SQLite"
        db_url=sqlite
    fi
fi
coordinator_store=()
if [ "$db_url" = sqlite ]; then
    coordinator_store=(--data-dir "$run_dir/.nat")
    backend=sqlite
    backend_description="the embedded SQLite store (\`$run_dir/.nat\`)"
else
    case "$db_url" in postgres://*|postgresql://*) ;; *) die "NAT_RESULTS_DATABASE_URL must be sqlite or a postgres:// URL" ;; esac
    coordinator_store=(--database-url "$db_url")
    backend=postgres
    pg_version=$(psql "$db_url" -Atc 'show server_version' 2>/dev/null || echo '?')
    shown_url=$(printf '%s' "$db_url" | sed -E 's#//([^:@/]+):[^@]*@#//\1:***@#')
    if [ -n "$created_db" ]; then
        backend_description="PostgreSQL $pg_version, a fresh database \`$created_db\` created for this run (\`$shown_url\`)"
    else
        backend_description="PostgreSQL $pg_version at \`$shown_url\`"
    fi
fi
echo "store: $backend_description"

# ---- coordinator and workers -----------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port)
http_port=$(free_port)
export NAT_COORDINATOR="http://127.0.0.1:$grpc_port"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$created_db" ] && [ "$NAT_RESULTS_DROP_DB" = 1 ]; then
        dropdb -h 127.0.0.1 -p 5432 -U postgres --if-exists "$created_db" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting nat-coordinator ($backend)"
"$bin/nat-coordinator" --listen "127.0.0.1:$grpc_port" --http-listen "127.0.0.1:$http_port" \
    "${coordinator_store[@]}" >"$run_dir/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do
    natctl jobs >/dev/null 2>&1 && break
    sleep 0.2
done
natctl jobs >/dev/null || die "the coordinator did not come up; see $run_dir/coordinator.log"
echo "dashboard: http://127.0.0.1:$http_port/"

cores=$(nproc)
threads=$(( cores / NAT_RESULTS_WORKERS )); [ "$threads" -ge 1 ] || threads=1
say "starting $NAT_RESULTS_WORKERS nat-worker(s), $threads thread(s) each"
for i in $(seq 1 "$NAT_RESULTS_WORKERS"); do
    "$bin/nat-worker" --coordinator "$NAT_COORDINATOR" --data-dir "$NAT_DATA_DIR" --threads "$threads" \
        --name "results-worker-$i" --checkpoint-dir "$run_dir/checkpoints-$i" --metrics-listen off \
        >"$run_dir/worker-$i.log" 2>&1 &
    pids+=($!)
done

# ---- the optimize jobs -----------------------------------------------------------------------
budget_yaml() { # indent, epochs, train, eval, channels, layers, validation_fraction
    local p=$1
    printf '%spreset: small\n%sepochs: %s\n%smax_train_examples: %s\n%smax_eval_examples: %s\n' \
        "$p" "$p" "$2" "$p" "$3" "$p" "$4"
    printf '%sinit_channels: %s\n%slayers: %s\n%svalidation_fraction: %s\n%smax_wall_seconds: 0\n' \
        "$p" "$5" "$p" "$6" "$p" "$7" "$p"
}

# write_job NAME SPACE CELLS FILE
write_job() {
    local name=$1 space=$2 cells=$3 file=$4
    {
        echo "kind: optimize"
        echo "name: $name"
        echo "dataset: fashion-mnist"
        echo "architectures: [${cells//,/, }]"
        echo "seed: 1"
        echo "priority: 10"
        echo "budget:           # derive: the top-k candidates trained from scratch (validation split)"
        budget_yaml "  " "$NAT_RESULTS_DERIVE_EPOCHS" "$NAT_RESULTS_DERIVE_TRAIN_EXAMPLES" 1000 \
            "$NAT_RESULTS_CHANNELS" "$NAT_RESULTS_LAYERS" 0.1
        echo "optimize:"
        echo "  space: $space"
        echo "  reward: supernet"
        echo "  iterations: $iterations"
        echo "  samples_per_iteration: $NAT_RESULTS_SAMPLES"
        echo "  derive_samples: $NAT_RESULTS_DERIVE_SAMPLES"
        echo "  derive_top_k: $NAT_RESULTS_TOP_K"
        echo "  final_seeds: $NAT_RESULTS_SEEDS"
        echo "  control: $NAT_RESULTS_CONTROL"
        echo "  final_budget:   # the independent final evaluation (test split)"
        budget_yaml "    " "$NAT_RESULTS_EPOCHS" "$NAT_RESULTS_TRAIN_EXAMPLES" "$NAT_RESULTS_EVAL_EXAMPLES" \
            "$NAT_RESULTS_CHANNELS" "$NAT_RESULTS_LAYERS" 0
        echo "  supernet:"
        echo "    init_channels: $NAT_RESULTS_SN_CHANNELS"
        echo "    layers: $NAT_RESULTS_SN_LAYERS"
        echo "    batch_size: $NAT_RESULTS_SN_BATCH"
        echo "    train_steps_between_pairs: $NAT_RESULTS_SN_STEPS"
        echo "    max_train_examples: $NAT_RESULTS_SN_TRAIN_EXAMPLES"
        echo "    validation_fraction: 0.1"
        echo "    eval_batches: 1"
        echo "    max_wall_seconds: 0"
        echo "    shards: auto"
        echo "    steps_per_shard: $NAT_RESULTS_SN_SHARD_STEPS"
        echo "    warmup_steps: $NAT_RESULTS_SN_WARMUP"
        echo "    round_deadline_seconds: 0"
        echo "    derive_examples: $NAT_RESULTS_SN_DERIVE_EXAMPLES"
    } >"$file"
}

submit() { # job file -> job id
    local out
    out=$(natctl submit -f "$1") || die "submitting $1 failed: $out"
    printf '%s\n' "$out" | tail -n 1
}

# waits for a job to end; prints progress every minute; saves its result JSON to $2
wait_job() {
    local job=$1 file=$2 label=$3 deadline=$(( $(now) + NAT_RESULTS_TIMEOUT )) last=0 line
    while :; do
        if natctl result "$job" --json >"$file.tmp" 2>"$run_dir/natctl.err"; then
            line=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
p = r.get("policy") or {}
print("%s: policy version %s, %s rewards" % (r.get("state"), p.get("version"), r.get("rewards")))
' "$file.tmp")
            case "$line" in
                succeeded*) mv "$file.tmp" "$file"; echo "$label: $line"; return 0 ;;
                failed*|cancelled*) mv "$file.tmp" "$file"; echo "$label: $line"; return 1 ;;
            esac
            if [ $(( $(now) - last )) -ge 60 ]; then
                echo "$(date -u +%H:%M:%S) $label: $line"
                last=$(now)
            fi
        fi
        [ "$(now)" -lt "$deadline" ] || die "$label ($job) did not finish within $NAT_RESULTS_TIMEOUT s"
        sleep 5
    done
}

specs=()
[ -z "$NAT_RESULTS_NAT_CELLS" ] || specs+=("nat:nat:$NAT_RESULTS_NAT_CELLS")
[ -z "$NAT_RESULTS_NATPP_CELLS" ] || specs+=("natpp:nat++:$NAT_RESULTS_NATPP_CELLS")
jobs_list=()
t_jobs_start=$(now)
for s in "${specs[@]}"; do
    label=${s%%:*} rest=${s#*:}
    space=${rest%%:*} cells=${rest#*:}
    f="$run_dir/jobs/$label.yaml"
    write_job "results-$label" "$space" "$cells" "$f"
    say "submitting the $space optimize job on $cells ($iterations rounds x $NAT_RESULTS_SAMPLES rewards)"
    cat "$f"
    job=$(submit "$f")
    echo "$space job: $job"
    # the job's event stream (phases and policy updates with their times) for the learning curve
    natctl -o json watch "$job" --plain >"$run_dir/results/$label.events.jsonl" \
        2>"$run_dir/results/$label.watch.err" &
    pids+=($!)
    jobs_list+=("$job:$label:$space:$cells")
done

# the paper's released output for each input in the same space, when there is one (shown beside ours)
mkdir -p "$run_dir/paper"
for entry in "${jobs_list[@]}"; do
    rest=${entry#*:}
    rest=${rest#*:}
    space=${rest%%:*} cells=${rest#*:}
    IFS=',' read -r -a cell_list <<<"$cells"
    for cell in "${cell_list[@]}"; do
        if natctl arch show "$cell.$space" --format darts >"$run_dir/paper/$cell.darts" 2>/dev/null; then
            natctl arch diff "$cell" "$cell.$space" --space "$space" >"$run_dir/paper/$cell.diff" 2>&1 || true
        else
            rm -f "$run_dir/paper/$cell.darts"
        fi
    done
done

say "waiting for the optimize jobs (warm-up, learning rounds, supernet screening, top-k, final evaluation)"
failed=0
done_at=()
for entry in "${jobs_list[@]}"; do
    job=${entry%%:*} rest=${entry#*:}
    label=${rest%%:*}
    wait_job "$job" "$run_dir/results/$label.json" "$label job $job" || failed=1
    done_at+=("$(( $(now) - t_jobs_start ))")
done
t_jobs_done=$(now)
sleep 2 # the watch streams end with their job's last event

# ---- the document ----------------------------------------------------------------------------
say "rendering $NAT_RESULTS_OUT"
if [ -n "${NAT_RESULTS_COMMIT:-}" ]; then
    commit=$NAT_RESULTS_COMMIT dirty=false
else
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    dirty=false
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || dirty=true
fi
knobs=$(env | grep -E '^NAT_RESULTS_' | grep -v '^NAT_RESULTS_DATABASE_URL=' | sort | tr '\n' ' ' || true)
{
    i=0
    for entry in "${jobs_list[@]}"; do
        job=${entry%%:*} rest=${entry#*:}
        label=${rest%%:*} rest=${rest#*:}
        printf '%s\t%s\t%s\t%s\t%s\n' "$job" "$label" "${rest%%:*}" "${rest#*:}" "${done_at[$i]}"
        i=$((i + 1))
    done
} >"$run_dir/jobs.tsv"
export R_STARTED="$started_utc" R_COMMIT="$commit" R_DIRTY="$dirty" R_COMMAND="${knobs}make results"
export R_BACKEND="$backend" R_BACKEND_DESCRIPTION="$backend_description" R_THREADS="$threads"
export R_LOAD_START="$load_start" R_T_START="$t_start" R_T_SETUP="$t_setup_done"
export R_T_JOBS_START="$t_jobs_start" R_T_JOBS_DONE="$t_jobs_done" R_ITERATIONS="$iterations"
python3 scripts/results_table.py meta "$run_dir"
mkdir -p "$(dirname "$NAT_RESULTS_OUT")"
python3 scripts/results_table.py table "$run_dir" >"$NAT_RESULTS_OUT.tmp"
mv "$NAT_RESULTS_OUT.tmp" "$NAT_RESULTS_OUT"
sed -n '/^## Final evaluation/,/^## What/p' "$NAT_RESULTS_OUT" | sed '$d'
echo "wrote $NAT_RESULTS_OUT (raw results in $run_dir)"
[ -z "$created_db" ] || [ "$NAT_RESULTS_DROP_DB" = 1 ] \
    || echo "kept PostgreSQL database $created_db (dropdb -h 127.0.0.1 -U postgres $created_db)"
[ "$failed" = 0 ] || die "an optimize job failed; the document shows what it has (natctl status JOB, $run_dir/coordinator.log)"
