#!/usr/bin/env bash
# `make demo`: nat-orchestrator end to end on one machine, with the embedded defaults.
#
# Builds the three binaries, starts a coordinator on its default SQLite store and two CPU workers,
# submits an `optimize` job on the DARTS_V2 cell (proxy reward: α and β trained from scratch on a short
# budget, repeats answered from the reward cache) on Fashion-MNIST (the 8x8 digits when apt cannot
# provide Fashion-MNIST), follows it live, prints the final evaluation (per-seed accuracies of the
# original and NAT's best candidate, the paired difference with its 95 % interval, params and
# multiply-adds), the verdict and the recommended architecture, then stops everything it started. Everything lives in a temporary directory unless NAT_DEMO_DIR is set.
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
worker_metrics=()
for i in $(seq 1 "$NAT_DEMO_WORKERS"); do
    # Each worker serves its own /metrics (the default 0.0.0.0:9464 fits one worker per host).
    metrics_port=$(free_port)
    worker_metrics+=("http://127.0.0.1:$metrics_port/metrics")
    "$bin/nat-worker" --coordinator "$NAT_COORDINATOR" --data-dir "$NAT_DATA_DIR" --threads "$threads" \
        --name "demo-worker-$i" --checkpoint-dir "$demo_dir/checkpoints-$i" \
        --metrics-listen "127.0.0.1:$metrics_port" \
        >"$demo_dir/worker-$i.log" 2>&1 &
    pids+=($!)
done
sleep 1
for i in $(seq 1 "$NAT_DEMO_WORKERS"); do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "nat-worker $i exited at start; its log ($demo_dir/worker-$i.log) ends with:" >&2
        tail -n 5 "$demo_dir/worker-$i.log" >&2
        exit 1
    fi
done
echo "worker metrics: ${worker_metrics[*]}"

say "submitting an optimize job: NAT learns a policy for the DARTS_V2 cell on $dataset"
jobfile="$demo_dir/demo-job.yaml"
cat >"$jobfile" <<YAML
kind: optimize
name: demo
dataset: $dataset
architectures: [darts-v2]
seed: 1
budget:
  preset: $NAT_DEMO_BUDGET
  epochs: 1
  max_train_examples: ${NAT_DEMO_TRAIN_EXAMPLES:-2000}
  max_eval_examples: 1000
optimize:
  space: nat
  reward: proxy
  iterations: ${NAT_DEMO_ITERATIONS:-4}
  samples_per_iteration: 4
  final_budget:
    preset: $NAT_DEMO_BUDGET
YAML
cat "$jobfile"
job=$("$bin/natctl" submit -f "$jobfile" | tail -n 1)
echo "job $job"
echo "dashboard: http://127.0.0.1:$http_port/jobs/$job   metrics: http://127.0.0.1:$http_port/metrics"

say "progress (learn the policy -> derive: K samples plus the original, ranked on the validation split -> final evaluation: original and best trained from scratch on 3 fresh seeds, measured on the test split)"
"$bin/natctl" watch "$job" || true

say "result"
"$bin/natctl" result "$job" --json >"$demo_dir/result.json"
python3 - "$demo_dir/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"job state: {r.get('state')}")
o, b = r.get("original") or {}, r.get("best") or {}
fin = r.get("final") or {}
fo, fb = fin.get("original") or {}, fin.get("best") or {}
seeds = fin.get("seeds") or []

def pct(x):
    return "-" if x is None else f"{100 * x:.2f} %"

def pts(x):
    return "?" if x is None else f"{100 * x:+.2f}"

def seed_acc(s, k):
    a = s.get("accuracies") or []
    return a[k] if k < len(a) else None

def mean_std(s, fallback):
    if s.get("mean") is None:
        return pct(fallback)
    return f"{100 * s['mean']:.2f} ± {100 * (s.get('std') or 0.0):.2f} %"

def cost(s, a, key):
    v = s.get(key, a.get(key))
    return "-" if v is None else str(v)

if seeds:
    print(f"top-1 accuracy on the test split; original and best each trained from scratch on {len(seeds)} seed(s)")
else:
    print("top-1 accuracy (no per-seed final evaluation in this result)")
rows = [("", "original", "NAT's best candidate")]
for k, seed in enumerate(seeds):
    rows.append((f"seed {seed}", pct(seed_acc(fo, k)), pct(seed_acc(fb, k))))
rows += [("mean ± std", mean_std(fo, o.get("accuracy")), mean_std(fb, b.get("accuracy"))),
         ("params", cost(fo, o, "params"), cost(fb, b, "params")),
         ("multiply-adds", cost(fo, o, "madds"), cost(fb, b, "madds"))]
for a, c, d in rows:
    print(f"{a:<16}{c:>22}{d:>24}")
diff = fin.get("paired_difference")
if diff:
    lo, hi = diff.get("ci_low"), diff.get("ci_high")
    interval = "no 95 % interval (one seed)" if lo is None and hi is None else f"95 % interval [{pts(lo)}, {pts(hi)}] points"
    print(f"paired difference (best - original): {pts(diff.get('mean'))} points, {interval} ({diff.get('method')})")
control = r.get("control")
if control:
    c = control.get("final") or {}
    vs = control.get("vs_original") or {}
    print(f"random control: {mean_std(c, None)}, control - original {pts(vs.get('mean'))} points, verdict {control.get('verdict')}")
print("original:            ", o.get("genotype"))
print("NAT's best candidate:", b.get("genotype"))
changed = r.get("changed_edges") or []
print("changed edges:", ", ".join(str(c) for c in changed) if changed else "none")
p = r.get("policy") or {}
print(f"policy {p.get('id')} version {p.get('version')}, learned from {r.get('rewards')} rewards")
rec = r.get("recommended") or {}
reason = (rec.get("reason") or "").strip()
which = {"best": "NAT's best candidate", "original": "the original"}.get(rec.get("from"), "-")
if reason.startswith("recommended:"):
    sentence = reason
elif reason:
    sentence = f"recommended: {which}, because {reason}"
else:
    sentence = f"recommended: {which}"
print()
print(f"verdict: {r.get('verdict') or '-'} — {sentence}")
print(f"RECOMMENDED architecture ({which}): {rec.get('genotype') or '-'}")
PY
say "done; stopping the coordinator and workers"
