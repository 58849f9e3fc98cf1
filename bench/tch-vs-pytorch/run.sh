#!/usr/bin/env bash
# Trains the same child network (DARTS_V2 evaluation network, C=8, L=5, batch 64, real
# Fashion-MNIST 28x28 images, SGD momentum 0.9) in tch (crates/nat-train/examples/throughput.rs)
# and in PyTorch eager (pytorch_throughput.py), both on the same libtorch 2.13.0 from the project
# venv and the same thread count, in interleaved rounds; prints images/s (median of the rounds)
# and the tch/PyTorch ratio as a Markdown table row for docs/BENCHMARKS.md.
#
#   bench/tch-vs-pytorch/run.sh [--threads N] [--rounds R] [--steps S] [--device cpu|cuda]
set -euo pipefail

threads=1 rounds=3 steps=30 device=cpu
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --steps) steps="$2"; shift ;;
    --device) device="$2"; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
cache="${NAT_CACHE_DIR:-$HOME/.cache/nat-orchestrator}"
venv="$cache/venv"
scripts/setup-libtorch.sh >/dev/null
scripts/fetch-data.sh --only fashion-mnist >/dev/null

# The CPU-only minimum install has libtorch but not torch's Python dependencies.
if ! "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
  echo "run.sh: installing torch's Python dependencies into $venv" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q \
    typing-extensions sympy networkx jinja2 fsspec filelock
fi
"$venv/bin/python" -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'

cargo build --release -q -p nat-train --example throughput
target_dir="$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
tch_bin="$target_dir/release/examples/throughput"

common=(--device "$device" --threads "$threads" --channels 8 --layers 5 --batch 64 --steps "$steps" --warmup 5)
tch_runs=() py_runs=()
for round in $(seq 1 "$rounds"); do
  t="$("$tch_bin" --dataset fashion-mnist "${common[@]}")"
  p="$("$venv/bin/python" bench/tch-vs-pytorch/pytorch_throughput.py --dataset fashion-mnist "${common[@]}")"
  echo "round $round: $t" >&2
  echo "round $round: $p" >&2
  tch_runs+=("$t") py_runs+=("$p")
done

"$venv/bin/python" - "$threads" "$device" "${#tch_runs[@]}" "${tch_runs[@]}" "${py_runs[@]}" <<'PY'
import json, statistics, sys
threads, device, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tch = [json.loads(s) for s in sys.argv[4:4 + n]]
py = [json.loads(s) for s in sys.argv[4 + n:]]
assert {r["params"] for r in tch} == {r["params"] for r in py}, "the two networks differ"
t = statistics.median(r["images_per_second"] for r in tch)
p = statistics.median(r["images_per_second"] for r in py)
print(f"| DARTS_V2 C=8 L=5, Fashion-MNIST 28x28, batch 64, {device}, {threads} thread(s), "
      f"{tch[0]['params']} params | {t:.1} | {p:.1} | {t / p:.2} |")
PY
