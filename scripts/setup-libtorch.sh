#!/usr/bin/env bash
# Installs libtorch (the PyTorch 2.13.0 wheel from PyPI, which tch/torch-sys 0.26 expect) into a venv
# OUTSIDE the clone and points <repo>/.libtorch at the wheel's torch/ folder (include/ + lib/), which
# the root .cargo/config.toml hands to torch-sys as LIBTORCH.
#
#   scripts/setup-libtorch.sh            CPU-only minimum (or the full set when nvidia-smi is present)
#   scripts/setup-libtorch.sh --gpu      full wheel set (CUDA libraries included)
#   scripts/setup-libtorch.sh --cpu      force the CPU-only minimum even when nvidia-smi is present
#
# Environment: NAT_CACHE_DIR (default $HOME/.cache/nat-orchestrator), PYTHON (default python3).
# Idempotent: does nothing but re-check the version and the symlink when torch 2.13.0 is installed.
# Measured facts behind the choices: docs/SETUP-NOTES.md.
set -euo pipefail

TORCH_VERSION="2.13.0"
CUDA_RUNTIME_VERSION="13.0.96"
CUDA_CUPTI_VERSION="13.0.85"

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

mode=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) mode=gpu ;;
    --cpu) mode=cpu ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup-libtorch: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$mode" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${NAT_CACHE_DIR:-$HOME/.cache/nat-orchestrator}"
venv="$cache/venv"
python="${PYTHON:-python3}"

say() { echo "setup-libtorch: $*"; }

# The wheel's version.py is read directly: in CPU-only-minimum mode `import torch` fails (missing
# Python dependencies) although libtorch itself is complete.
installed_version() {
  local sp
  sp="$(site_packages)" || return 1
  [ -f "$sp/torch/version.py" ] || return 1
  sed -n "s/^__version__ = '\([^']*\)'.*/\1/p" "$sp/torch/version.py" | head -n1
}

site_packages() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

has_full_set() {
  "$venv/bin/python" -m pip show -q nvidia-cublas >/dev/null 2>&1 \
    || "$venv/bin/python" -m pip show -q nvidia-cublas-cu13 >/dev/null 2>&1
}

mkdir -p "$cache"
if [ ! -x "$venv/bin/python" ]; then
  say "creating venv $venv (with $($python --version 2>&1))"
  "$python" -m venv "$venv"
fi

current="$(installed_version || true)"
base="${current%%+*}"
if [ "$base" = "$TORCH_VERSION" ] && { [ "$mode" = cpu ] || has_full_set; }; then
  say "torch $current already installed in $venv ($mode mode): nothing to install"
else
  if [ -n "$current" ] && [ "$base" != "$TORCH_VERSION" ]; then
    say "found torch $current, replacing it with $TORCH_VERSION"
  fi
  if [ "$mode" = gpu ]; then
    say "installing the full torch==$TORCH_VERSION wheel set (CUDA libraries included, ~2.7 GB)"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "torch==$TORCH_VERSION"
  else
    say "installing the CPU-only minimum: torch==$TORCH_VERSION plus libcudart/libcupti (~1.2 GB)"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps "torch==$TORCH_VERSION"
    # The CPU library of the PyPI wheel still links libcudart.so.13 and libcupti.so.13.
    "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
      "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" "nvidia-cuda-cupti==$CUDA_CUPTI_VERSION"
  fi
fi

current="$(installed_version || true)"
if [ "${current%%+*}" != "$TORCH_VERSION" ]; then
  echo "setup-libtorch: expected torch $TORCH_VERSION in $venv, found '${current:-nothing}'" >&2
  exit 1
fi
torch_dir="$(site_packages)/torch"
for required in include/torch lib/libtorch_cpu.so; do
  if [ ! -e "$torch_dir/$required" ]; then
    echo "setup-libtorch: $torch_dir/$required is missing: the torch wheel is incomplete" >&2
    exit 1
  fi
done

link="$repo/.libtorch"
if [ -L "$link" ] && [ "$(readlink "$link")" = "$torch_dir" ]; then
  say "$link already points at $torch_dir"
else
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "setup-libtorch: $link exists and is not a symlink; remove it first" >&2
    exit 1
  fi
  ln -sfn "$torch_dir" "$link"
  say "linked $link -> $torch_dir"
fi
cuda="no"
[ -e "$torch_dir/lib/libtorch_cuda.so" ] && cuda="yes (libtorch_cuda.so present)"
say "torch $current ready ($mode mode); CUDA backend library: $cuda"
say "cargo picks it up through .cargo/config.toml (LIBTORCH=.libtorch)"
