#!/usr/bin/env bash
# `make results`: regenerates docs/RESULTS.md end to end — the NAT results table on Fashion-MNIST.
#
# For the DARTS, ResNet-block, VGG-block and MobileNetV2-block cells, three conditions: the original
# cell, a random transformation within the same transition space (a different one per seed), and
# the NAT-optimized cell. The NAT cells come from the real system: one `optimize` job on the
# coordinator learns one NAT policy (proxy reward) and derives the best transformation of every
# cell. Then every (cell, condition) is trained with the SAME budget by real workers through the
# coordinator (`evaluate` jobs, one per seed and condition group), and scripts/results_table.py
# renders the markdown from the saved `natctl result --json` documents.
#
# Store: a fresh PostgreSQL database with three workers by default (when PostgreSQL answers on
# 127.0.0.1:5432), else the embedded SQLite store. The database is kept afterwards (its name is in
# the log and the document) unless NAT_RESULTS_DROP_DB=1.
#
# Knobs (environment; defaults sized for about 30-45 minutes on a 2-core machine):
#   NAT_RESULTS_DATABASE_URL   sqlite | postgres://… (used as is, not created or dropped) | unset
#   NAT_RESULTS_WORKERS        3          worker processes (threads each: nproc / workers, >= 1)
#   NAT_RESULTS_SEEDS          3          seeds 1..N of every (cell, condition)
#   NAT_RESULTS_CELLS          darts-v2,resnet-block,vgg-block,mobilenetv2-block
#   NAT_RESULTS_EPOCHS         3          evaluation budget: epochs
#   NAT_RESULTS_TRAIN_EXAMPLES 6000       … training images (0 = all 60,000)
#   NAT_RESULTS_EVAL_EXAMPLES  5000       … test images the accuracy is measured on (0 = all 10,000)
#   NAT_RESULTS_CHANNELS       8          … initial channels C
#   NAT_RESULTS_LAYERS         3          … cells L
#   NAT_RESULTS_SPACE          nat++      transition space of NAT and of the random baseline
#   NAT_RESULTS_LEARN_ON       inputs     inputs: learn on the four cells; random: on random
#                                         architectures of the space (optimize.random_inputs)
#   NAT_RESULTS_ITERATIONS     20         policy updates of the optimize job
#   NAT_RESULTS_SAMPLES        8          rewards per update
#   NAT_RESULTS_DERIVE_SAMPLES (coordinator default, 10) transformations derived per cell
#   NAT_RESULTS_PROXY_EPOCHS   1          proxy budget (rewards, derive): epochs
#   NAT_RESULTS_PROXY_TRAIN_EXAMPLES 2000 … training images
#   NAT_RESULTS_PROXY_EVAL_EXAMPLES  1000 … validation images (held out from the training split)
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
: "${NAT_RESULTS_WORKERS:=3}"
: "${NAT_RESULTS_SEEDS:=3}"
: "${NAT_RESULTS_CELLS:=darts-v2,resnet-block,vgg-block,mobilenetv2-block}"
: "${NAT_RESULTS_EPOCHS:=3}"
: "${NAT_RESULTS_TRAIN_EXAMPLES:=6000}"
: "${NAT_RESULTS_EVAL_EXAMPLES:=5000}"
: "${NAT_RESULTS_CHANNELS:=8}"
: "${NAT_RESULTS_LAYERS:=3}"
: "${NAT_RESULTS_SPACE:=nat++}"
: "${NAT_RESULTS_LEARN_ON:=inputs}"
: "${NAT_RESULTS_ITERATIONS:=20}"
: "${NAT_RESULTS_SAMPLES:=8}"
: "${NAT_RESULTS_DERIVE_SAMPLES:=}"
: "${NAT_RESULTS_PROXY_EPOCHS:=1}"
: "${NAT_RESULTS_PROXY_TRAIN_EXAMPLES:=2000}"
: "${NAT_RESULTS_PROXY_EVAL_EXAMPLES:=1000}"
: "${NAT_RESULTS_TIMEOUT:=10800}"
: "${NAT_RESULTS_OUT:=docs/RESULTS.md}"
: "${NAT_RESULTS_DROP_DB:=0}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "results: $*" >&2; exit 1; }
now() { date +%s; }
utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

case "$NAT_RESULTS_LEARN_ON" in inputs|random) ;; *) die "NAT_RESULTS_LEARN_ON must be inputs or random, got '$NAT_RESULTS_LEARN_ON'" ;; esac
case "$NAT_RESULTS_SPACE" in nat|nat++) ;; *) die "NAT_RESULTS_SPACE must be nat or nat++, got '$NAT_RESULTS_SPACE'" ;; esac
[ "$NAT_RESULTS_SEEDS" -ge 1 ] 2>/dev/null || die "NAT_RESULTS_SEEDS must be a positive integer"
[ "$NAT_RESULTS_WORKERS" -ge 1 ] 2>/dev/null || die "NAT_RESULTS_WORKERS must be a positive integer"

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
mkdir -p "$run_dir/cells" "$run_dir/jobs" "$run_dir/results"
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

# ---- cells -----------------------------------------------------------------------------------
IFS=',' read -r -a cells <<<"$NAT_RESULTS_CELLS"
seeds=$(seq 1 "$NAT_RESULTS_SEEDS")
natctl arch ops --space "$NAT_RESULTS_SPACE" --json >"$run_dir/cells/ops.json"
say "random transformations in the $NAT_RESULTS_SPACE space (one per cell and seed)"
for cell in "${cells[@]}"; do
    natctl arch show "$cell" --format json >"$run_dir/cells/$cell.original.json"
    for seed in $seeds; do
        f="$run_dir/cells/$cell.random.$seed.json"
        python3 scripts/results_table.py random "$run_dir/cells/$cell.original.json" \
            "$run_dir/cells/ops.json" "$cell/$seed" >"$f"
        natctl arch diff "$run_dir/cells/$cell.original.json" "$f" --space "$NAT_RESULTS_SPACE" \
            >"$run_dir/cells/$cell.random.$seed.diff"
        echo "$cell seed $seed: $(tail -n 1 "$run_dir/cells/$cell.random.$seed.diff")"
    done
done

budget_yaml() { # indent, epochs, train, eval, channels, layers, validation_fraction
    local p=$1
    printf '%spreset: small\n%sepochs: %s\n%smax_train_examples: %s\n%smax_eval_examples: %s\n' \
        "$p" "$p" "$2" "$p" "$3" "$p" "$4"
    printf '%sinit_channels: %s\n%slayers: %s\n%svalidation_fraction: %s\n%smax_wall_seconds: 0\n' \
        "$p" "$5" "$p" "$6" "$p" "$7" "$p"
}
eval_budget() { budget_yaml "  " "$NAT_RESULTS_EPOCHS" "$NAT_RESULTS_TRAIN_EXAMPLES" \
    "$NAT_RESULTS_EVAL_EXAMPLES" "$NAT_RESULTS_CHANNELS" "$NAT_RESULTS_LAYERS" 0; }

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
            line=$(python3 - "$file.tmp" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
a = r.get("architectures", [])
done = sum(1 for x in a if x.get("state") in ("succeeded", "failed", "cancelled"))
extra = ""
if r.get("kind") == "optimize":
    p = r.get("policy") or {}
    extra = f", policy version {p.get('version')}, {r.get('rewards')} rewards"
print(f"{r.get('state')} {done}/{len(a)} tasks done{extra}")
PY
)
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

# ---- the optimize job ------------------------------------------------------------------------
say "submitting the optimize job (NAT, $NAT_RESULTS_SPACE, learn on $NAT_RESULTS_LEARN_ON)"
opt_file="$run_dir/jobs/optimize.yaml"
{
    echo "kind: optimize"
    echo "name: results-nat"
    echo "dataset: fashion-mnist"
    echo "architectures: [$(IFS=,; echo "${cells[*]}" | sed 's/,/, /g')]"
    echo "seed: 1"
    echo "priority: 10"
    echo "budget:"
    budget_yaml "  " "$NAT_RESULTS_PROXY_EPOCHS" "$NAT_RESULTS_PROXY_TRAIN_EXAMPLES" "$NAT_RESULTS_PROXY_EVAL_EXAMPLES" \
        "$NAT_RESULTS_CHANNELS" "$NAT_RESULTS_LAYERS" 0.1
    echo "optimize:"
    echo "  space: $NAT_RESULTS_SPACE"
    echo "  reward: proxy"
    echo "  iterations: $NAT_RESULTS_ITERATIONS"
    echo "  samples_per_iteration: $NAT_RESULTS_SAMPLES"
    [ "$NAT_RESULTS_LEARN_ON" = random ] && echo "  random_inputs: true"
    [ -n "$NAT_RESULTS_DERIVE_SAMPLES" ] && echo "  derive_samples: $NAT_RESULTS_DERIVE_SAMPLES"
    echo "  final_budget:"
    echo "    preset: smoke"
    echo "    max_wall_seconds: 0"
} >"$opt_file"
cat "$opt_file"
t_opt_start=$(now)
opt_job=$(submit "$opt_file")
echo "optimize job $opt_job"

# ---- evaluate jobs: original and random (they fill the workers while the policy learns) -------
manifest_items="$run_dir/manifest-items.jsonl"
: >"$manifest_items"
# write_eval_job LABEL SEED FILE CONDITION:CELL:GENOTYPE_FILE...
write_eval_job() {
    local label=$1 seed=$2 file=$3; shift 3
    {
        echo "kind: evaluate"
        echo "name: results-$label-seed$seed"
        echo "dataset: fashion-mnist"
        echo "seed: $seed"
        echo "priority: 0"
        echo "budget:"
        eval_budget
        echo "architectures:"
        for item in "$@"; do echo "  - ${item##*:}"; done
    } >"$file"
}
record_job() { # LABEL SEED JOB CONDITION:CELL:GENOTYPE_FILE...
    local label=$1 seed=$2 job=$3 index=0; shift 3
    for item in "$@"; do
        local cond=${item%%:*} rest=${item#*:}
        local cell=${rest%%:*} gfile=${rest#*:}
        local darts changed
        darts=$(natctl arch show "$gfile" --format darts)
        if [ "$cond" = original ]; then
            changed=""
        else
            changed=$(natctl arch diff "$run_dir/cells/$cell.original.json" "$gfile" | sed '$d')
        fi
        python3 - "$label" "$seed" "$job" "$index" "$cond" "$cell" "$darts" "$changed" >>"$manifest_items" <<'PY'
import json, sys
label, seed, job, index, cond, cell, darts, changed = sys.argv[1:]
print(json.dumps({"label": label, "seed": int(seed), "job": job, "index": int(index),
                  "condition": cond, "cell": cell, "genotype_darts": darts,
                  "changed_edges": [l for l in changed.splitlines() if l.strip()] if cond != "original" else []}))
PY
        index=$((index + 1))
    done
}

say "submitting the evaluate jobs for the original and random cells"
t_eval_start=$(now)
eval_jobs=()
for seed in $seeds; do
    items=()
    for cell in "${cells[@]}"; do
        items+=("original:$cell:$run_dir/cells/$cell.original.json")
        items+=("random:$cell:$run_dir/cells/$cell.random.$seed.json")
    done
    f="$run_dir/jobs/original-random-seed$seed.yaml"
    write_eval_job original-random "$seed" "$f" "${items[@]}"
    job=$(submit "$f")
    record_job original-random "$seed" "$job" "${items[@]}"
    eval_jobs+=("$job:original-random:$seed")
    echo "seed $seed: evaluate job $job (${#items[@]} architectures)"
done

say "waiting for the optimize job (learn the policy -> derive the best of K per cell -> smoke final check)"
wait_job "$opt_job" "$run_dir/results/optimize.json" "optimize job" \
    || die "the optimize job failed; see natctl status $opt_job and $run_dir/coordinator.log"
t_opt_done=$(now)

python3 - "$run_dir/results/optimize.json" "$run_dir/cells" "${cells[@]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
out_dir, cells = sys.argv[2], sys.argv[3:]
outcomes = r.get("optimize") or []
if len(outcomes) != len(cells):
    sys.exit(f"results: the optimize job returned {len(outcomes)} outcomes for {len(cells)} cells")
for cell, o in zip(cells, outcomes):
    g = (o.get("best") or {}).get("genotype_json")
    if not g:
        sys.exit(f"results: no best genotype for {cell}")
    with open(f"{out_dir}/{cell}.nat.json", "w") as f:
        json.dump(g, f, indent=1)
    print(f"{cell}: {len(o.get('changed_edges') or [])} edge(s) changed")
PY
for cell in "${cells[@]}"; do
    natctl arch diff "$run_dir/cells/$cell.original.json" "$run_dir/cells/$cell.nat.json" \
        --space "$NAT_RESULTS_SPACE" | tail -n 1
done

say "submitting the evaluate jobs for the NAT-optimized cells"
for seed in $seeds; do
    items=()
    for cell in "${cells[@]}"; do items+=("nat:$cell:$run_dir/cells/$cell.nat.json"); done
    f="$run_dir/jobs/nat-seed$seed.yaml"
    write_eval_job nat "$seed" "$f" "${items[@]}"
    job=$(submit "$f")
    record_job nat "$seed" "$job" "${items[@]}"
    eval_jobs+=("$job:nat:$seed")
    echo "seed $seed: evaluate job $job (${#items[@]} architectures)"
done

say "waiting for the evaluate jobs"
failed=0
for entry in "${eval_jobs[@]}"; do
    job=${entry%%:*} rest=${entry#*:}
    wait_job "$job" "$run_dir/results/$job.json" "evaluate ${rest%%:*} seed ${rest#*:}" || failed=1
done
t_eval_done=$(now)
[ "$failed" = 0 ] || echo "results: an evaluate job failed; the table shows which trainings are missing" >&2

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
python3 - "$run_dir" <<PY
import json, os, platform, sys, time
run_dir = sys.argv[1]
items = [json.loads(l) for l in open(os.path.join(run_dir, "manifest-items.jsonl")) if l.strip()]
jobs = []
for entry in """${eval_jobs[*]}""".split():
    job, label, seed = entry.split(":")
    jobs.append({"job": job, "label": label, "seed": int(seed),
                 "result_file": f"results/{job}.json",
                 "items": [i for i in items if i["job"] == job]})
cells = "${cells[*]}".split()
labels = {"darts-v2": "DARTS (darts-v2)", "resnet-block": "ResNet block",
          "vgg-block": "VGG block", "mobilenetv2-block": "MobileNetV2 block"}
manifest = {"cells": cells, "cell_labels": labels, "seeds": list(range(1, ${NAT_RESULTS_SEEDS} + 1)),
            "optimize_job": "$opt_job", "optimize_result_file": "results/optimize.json",
            "evaluate_jobs": jobs}
json.dump(manifest, open(os.path.join(run_dir, "manifest.json"), "w"), indent=1)
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
mem = 0
for line in open("/proc/meminfo"):
    if line.startswith("MemTotal"):
        mem = int(line.split()[1]) / 1024 / 1024
def budget(epochs, train, evaluate, c, l, vf):
    return {"preset": "small", "epochs": epochs, "max_train_examples": train,
            "max_eval_examples": evaluate, "init_channels": c, "layers": l,
            "validation_fraction": vf, "max_wall_seconds": 0}
knobs = "$knobs".strip()
meta = {
    "started_utc": "$started_utc",
    "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "commit": "$commit", "dirty": $( [ "$dirty" = true ] && echo True || echo False ),
    "command": (knobs + " make results").strip(),
    "backend": "$backend", "backend_description": """$backend_description""",
    "workers": ${NAT_RESULTS_WORKERS}, "threads_per_worker": ${threads},
    "run_dir": run_dir,
    "machine": {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem, 1),
                "kernel": platform.system() + " " + platform.release(),
                "load_start": "$load_start",
                "load_end": " ".join(open("/proc/loadavg").read().split()[:3])},
    "wall_seconds": {"total": $(now) - ${t_start}, "setup": ${t_setup_done} - ${t_start},
                     "optimize": ${t_opt_done} - ${t_opt_start},
                     "evaluate": ${t_eval_done} - ${t_eval_start}},
    "eval_budget": budget(${NAT_RESULTS_EPOCHS}, ${NAT_RESULTS_TRAIN_EXAMPLES},
                          ${NAT_RESULTS_EVAL_EXAMPLES}, ${NAT_RESULTS_CHANNELS}, ${NAT_RESULTS_LAYERS}, 0),
    "optimize": {"space": "$NAT_RESULTS_SPACE", "iterations": ${NAT_RESULTS_ITERATIONS},
                 "samples_per_iteration": ${NAT_RESULTS_SAMPLES},
                 "derive_samples": int("${NAT_RESULTS_DERIVE_SAMPLES:-10}"),
                 "random_inputs": "$NAT_RESULTS_LEARN_ON" == "random", "seed": 1,
                 "proxy_budget": budget(${NAT_RESULTS_PROXY_EPOCHS}, ${NAT_RESULTS_PROXY_TRAIN_EXAMPLES},
                                        ${NAT_RESULTS_PROXY_EVAL_EXAMPLES}, ${NAT_RESULTS_CHANNELS}, ${NAT_RESULTS_LAYERS}, 0.1)},
}
json.dump(meta, open(os.path.join(run_dir, "meta.json"), "w"), indent=1)
PY
mkdir -p "$(dirname "$NAT_RESULTS_OUT")"
python3 scripts/results_table.py table "$run_dir" >"$NAT_RESULTS_OUT.tmp"
mv "$NAT_RESULTS_OUT.tmp" "$NAT_RESULTS_OUT"
sed -n '/^## Table/,/^## What/p' "$NAT_RESULTS_OUT" | sed '$d'
echo "wrote $NAT_RESULTS_OUT (raw results in $run_dir)"
[ -z "$created_db" ] || [ "$NAT_RESULTS_DROP_DB" = 1 ] \
    || echo "kept PostgreSQL database $created_db (dropdb -h 127.0.0.1 -U postgres $created_db)"
exit "$failed"
