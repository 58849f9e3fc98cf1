#!/usr/bin/env bash
# `make test-install`: proves the installed worker needs no build tree.
#
# Installs (scripts/install.sh) into a temporary prefix, moves the prefix elsewhere, then runs
# `nat-worker --version` and `nat-worker doctor` (libtorch loads and multiplies a matrix) inside
# `unshare -m` with the venv, the clone's .libtorch and the cargo target directory hidden under
# empty tmpfs mounts, and LD_LIBRARY_PATH unset. Needs patchelf, and root or unprivileged user
# namespaces (unshare -r).
# Binaries: $CARGO_TARGET_DIR/release when nat-worker is built there, else $CARGO_TARGET_DIR/debug.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
: "${NAT_CACHE_DIR:=$HOME/.cache/nat-orchestrator}"
: "${CARGO_TARGET_DIR:=$NAT_CACHE_DIR/target}"
die() { echo "install-test: $*" >&2; exit 1; }

bin_dir="$CARGO_TARGET_DIR/release"
if [ ! -x "$bin_dir/nat-worker" ] || [ ! -x "$bin_dir/nat-coordinator" ] || [ ! -x "$bin_dir/natctl" ]; then
    bin_dir="$CARGO_TARGET_DIR/debug"
    [ -x "$bin_dir/nat-worker" ] || cargo build -p nat-worker -p nat-coordinator -p natctl
fi
work="$(mktemp -d -t nat-install-test.XXXXXX)"
trap 'rm -rf "$work"' EXIT
scripts/install.sh "$work/first" "$bin_dir"
mv "$work/first" "$work/moved"
prefix="$work/moved"

[ "$(patchelf --print-rpath "$prefix/bin/nat-worker")" = '$ORIGIN/../lib/nat-orchestrator' ] \
    || die "installed nat-worker RUNPATH is $(patchelf --print-rpath "$prefix/bin/nat-worker")"
# The build's own binary keeps its rpath into the venv.
patchelf --print-rpath "$bin_dir/nat-worker" | grep -q '/' || die "the build's nat-worker lost its rpath"

# As root a plain mount namespace; otherwise a user namespace lets tmpfs be mounted.
unshare_args=(-m)
[ "$(id -u)" = 0 ] || unshare_args=(-r -m)
hidden=("$CARGO_TARGET_DIR" "$(readlink -f .libtorch)" "$NAT_CACHE_DIR/venv")
out="$work/out.txt"
# shellcheck disable=SC2016
env -u LD_LIBRARY_PATH -u LIBTORCH unshare "${unshare_args[@]}" bash -c '
    set -euo pipefail
    prefix=$1; shift
    for dir in "$@"; do [ -d "$dir" ] && mount -t tmpfs none "$dir"; done
    for dir in "$@"; do
        [ -z "$(ls -A "$dir" 2>/dev/null)" ] || { echo "install-test: $dir is not hidden" >&2; exit 1; }
    done
    "$prefix/bin/nat-worker" --version
    "$prefix/bin/nat-worker" doctor
' install-test "$prefix" "${hidden[@]}" | tee "$out"
grep -q "^nat-worker " "$out" || die "no version line"
grep -q "^libtorch: *$prefix/lib/nat-orchestrator/libtorch_cpu.so" "$out" \
    || die "doctor did not report libtorch from $prefix/lib/nat-orchestrator"
grep -q "^libtorch version: *2\.13\.0" "$out" || die "doctor did not report libtorch 2.13.0"
grep -q "^cpu: .*matmul ok" "$out" || die "the CPU check did not pass"
echo "install-test: the installed worker runs from $prefix with the build tree hidden"
