#!/usr/bin/env bash
# GPU check for nat-train / the worker (run on a machine with an NVIDIA GPU):
#  1. installs the full PyTorch 2.13.0 wheel set (CUDA libraries) into the project venv,
#  2. builds nat-train's throughput example against it, forcing libtorch_cuda to be linked
#     (NAT_LINK_TORCH_CUDA=1, see crates/nat-train/libtorch_link.rs),
#  3. checks that libtorch's CUDA backend is really loaded (tch::Cuda::is_available), the binary
#     starting without LD_LIBRARY_PATH,
#  4. trains a task on the GPU (train_eval, one epoch) and measures training throughput on the GPU
#     and on the CPU, tch vs PyTorch eager.
# Prints everything it measured; exit status 0 only if every step passed.
#
#   bench/gpu-check.sh            (about 5-10 minutes on a fresh machine: 2.7 GB download + build)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { echo "gpu-check: $*"; }

command -v nvidia-smi >/dev/null || { say "FAIL: nvidia-smi not found (no NVIDIA driver)"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

scripts/setup-libtorch.sh --gpu
scripts/fetch-data.sh --only digits,fashion-mnist

export NAT_LINK_TORCH_CUDA=1
cargo build --release -q -p nat-train --example throughput
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/release/examples/throughput"

if readelf -d "$bin" | grep -q 'libtorch_cuda.so'; then
  say "binary links libtorch_cuda.so"
else
  say "FAIL: libtorch_cuda.so is not a NEEDED library of $bin"; exit 1
fi

say "train_eval on cuda:0 (Fashion-MNIST, DARTS_V2 C=16 L=8, one epoch of 200 batches):"
env -u LD_LIBRARY_PATH "$bin" --mode train-eval --device cuda --dataset fashion-mnist \
  --channels 16 --layers 8 --batch 96 --steps 200 --warmup 0

say "training throughput, tch vs PyTorch eager, GPU:"
bench/tch-vs-pytorch/run.sh --device cuda --rounds 3 --steps 100
say "training throughput, tch vs PyTorch eager, CPU (4 threads):"
bench/tch-vs-pytorch/run.sh --device cpu --threads 4 --rounds 3 --steps 30
say "OK: CUDA backend loaded, a task trained on the GPU"
