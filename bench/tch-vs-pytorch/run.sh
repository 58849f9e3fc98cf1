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

# PyTorch eager runs from a second venv holding the full torch==2.13.0 wheel set: `import torch`
# loads torch._C, which links libtorch_cuda.so and so needs the CUDA wheels (cuDNN, cuBLAS, ...)
# that the CPU-only-minimum project venv deliberately lacks (installing them there would make
# every libtorch build on this machine link the CUDA backend). Both venvs hold the same
# torch-2.13.0 wheel, i.e. byte-identical libtorch_cpu.so; on a GPU node (full set in the project
# venv) the project venv itself is used.
if "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
  py_venv="$venv"
else
  py_venv="$cache/venv-pytorch-bench"
  if ! "$py_venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
    echo "run.sh: installing torch==2.13.0 with its dependencies into $py_venv (~2.7 GB)" >&2
    python3 -m venv "$py_venv"
    "$py_venv/bin/python" -m pip install --disable-pip-version-check -q torch==2.13.0
  fi
fi
"$py_venv/bin/python" -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
cmp -s "$py_venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so" "$repo/.libtorch/lib/libtorch_cpu.so" \
  || echo "run.sh: warning: the two venvs' libtorch_cpu.so differ" >&2

cargo build --release -q -p nat-train --example throughput
target_dir="$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
tch_bin="$target_dir/release/examples/throughput"

common=(--device "$device" --threads "$threads" --channels 8 --layers 5 --batch 64 --steps "$steps" --warmup 5)
echo "run.sh: load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" >&2
tch_runs=() py_runs=()
for round in $(seq 1 "$rounds"); do
  t="$("$tch_bin" --dataset fashion-mnist "${common[@]}")"
  p="$("$py_venv/bin/python" bench/tch-vs-pytorch/pytorch_throughput.py --dataset fashion-mnist "${common[@]}")"
  echo "round $round: $t" >&2
  echo "round $round: $p" >&2
  tch_runs+=("$t") py_runs+=("$p")
done

echo "run.sh: load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$venv/bin/python" - "$threads" "$device" "${#tch_runs[@]}" "${tch_runs[@]}" "${py_runs[@]}" <<'PY'
import json, statistics, sys
threads, device, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tch = [json.loads(s) for s in sys.argv[4:4 + n]]
py = [json.loads(s) for s in sys.argv[4 + n:]]
assert {r["params"] for r in tch} == {r["params"] for r in py}, "the two networks differ"
t = statistics.median(r["images_per_second"] for r in tch)
p = statistics.median(r["images_per_second"] for r in py)
print(f"| DARTS_V2 C=8 L=5, Fashion-MNIST 28x28, batch 64, {device}, {threads} thread(s), "
      f"{tch[0]['params']} params | {t:.1f} | {p:.1f} | {t / p:.2f} |")
PY
