#!/usr/bin/env bash
# Installs nat-coordinator, natctl and a relocatable nat-worker under a prefix (`make install`).
#
#   scripts/install.sh PREFIX [BIN_DIR]
#
#   PREFIX/bin/{nat-coordinator,nat-worker,natctl}
#   PREFIX/lib/nat-orchestrator/   the libtorch shared libraries the worker loads (from the PyTorch
#                                  2.13.0 wheel: torch/lib plus the nvidia-* wheels' libraries),
#                                  and torch-version.py (the wheel's version.py, read by
#                                  `nat-worker doctor`)
#   PREFIX/share/nat-orchestrator/ systemd units and environment examples (deploy/systemd)
#
# The installed worker's RUNPATH is rewritten to `$ORIGIN/../lib/nat-orchestrator`, so the prefix
# can be moved or copied to another host of the same OS (glibc 2.36+, e.g. Debian 12) and runs
# with no build tree, venv or LD_LIBRARY_PATH. The build's own binaries keep their rpath.
#
# BIN_DIR holds the release binaries (default: $CARGO_TARGET_DIR/release, else target/release).
# Libraries copied: every library outside the system directories that the worker resolves (ldd);
# when it links libtorch_cuda.so (a full CUDA build) also every other library of torch/lib and of
# the nvidia-* wheels, because libtorch and cuDNN open some of them only at run time.
# The installed binaries have their debug info stripped. Needs patchelf and strip (binutils);
# patchelf is installed here when missing and run as root.
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
[ $# -ge 1 ] && [ $# -le 2 ] || { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$1"
bin_dir="${2:-${CARGO_TARGET_DIR:-$repo/target}/release}"
say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

[ -n "$prefix" ] || die "PREFIX is empty"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
for binary in nat-coordinator nat-worker natctl; do
    [ -x "$bin_dir/$binary" ] || die "$bin_dir/$binary is missing: run \`make build\` first"
done
if ! command -v patchelf >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "patchelf is missing (Debian: apt-get install patchelf)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >/dev/null; }
fi

# Resolve the worker's libraries as the build left them (its rpath points into the venv).
resolved="$(env -u LD_LIBRARY_PATH ldd "$bin_dir/nat-worker")"
if grep -q 'not found' <<<"$resolved"; then
    die "the built nat-worker does not resolve all its libraries:
$(grep 'not found' <<<"$resolved")"
fi
libtorch_cpu="$(awk '$1 == "libtorch_cpu.so" { print $3 }' <<<"$resolved")"
[ -n "$libtorch_cpu" ] || die "the built nat-worker does not link libtorch_cpu.so"
torch_lib="$(dirname "$(readlink -f "$libtorch_cpu")")"

lib_dir="$prefix/lib/nat-orchestrator"
staging="$prefix/lib/.nat-orchestrator.new"
rm -rf "$staging"
mkdir -p "$staging"
# name => path, for every non-system library of the closure
while read -r name _ path _; do
    case "$path" in
        /lib/*|/lib64/*|/usr/lib/*|/usr/lib64/*|"") continue ;;
    esac
    cp -L "$path" "$staging/$name"
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $1, $2, $3 }' <<<"$resolved")

if [ -e "$staging/libtorch_cuda.so" ]; then
    say "CUDA build: copying every library of torch/lib and the nvidia-* wheels"
    for lib in "$torch_lib"/*.so*; do
        case "$(basename "$lib")" in libtorch_python.so|libshm*) continue ;; esac
        [ -e "$staging/$(basename "$lib")" ] || cp -L "$lib" "$staging/"
    done
    nvidia="$(dirname "$(dirname "$torch_lib")")/nvidia"
    if [ -d "$nvidia" ]; then
        while IFS= read -r lib; do
            [ -e "$staging/$(basename "$lib")" ] || cp -L "$lib" "$staging/"
        done < <(find "$nvidia" -path '*/lib/*.so*' \( -type f -o -type l \))
    fi
fi
# The wheel's libraries find each other through `$ORIGIN` in their own RPATH, so one flat folder works.
version_py="$(dirname "$torch_lib")/version.py"
[ -f "$version_py" ] && cp "$version_py" "$staging/torch-version.py"
rm -rf "$lib_dir"
mv "$staging" "$lib_dir"

mkdir -p "$prefix/bin"
# Debug info stripped (the release profile keeps it: 160 MB per binary, 20-40 MB without).
for binary in nat-coordinator natctl; do
    install -m 0755 "$bin_dir/$binary" "$prefix/bin/.$binary.new"
    strip --strip-debug "$prefix/bin/.$binary.new"
    mv "$prefix/bin/.$binary.new" "$prefix/bin/$binary"
done
install -m 0755 "$bin_dir/nat-worker" "$prefix/bin/.nat-worker.new"
strip --strip-debug "$prefix/bin/.nat-worker.new"
patchelf --set-rpath '$ORIGIN/../lib/nat-orchestrator' "$prefix/bin/.nat-worker.new"
mv "$prefix/bin/.nat-worker.new" "$prefix/bin/nat-worker"

share="$prefix/share/nat-orchestrator"
mkdir -p "$share/systemd"
install -m 0644 "$repo"/deploy/systemd/* "$share/systemd/"

# The installed worker must resolve everything inside the prefix or the system.
installed="$(env -u LD_LIBRARY_PATH ldd "$prefix/bin/nat-worker")"
if grep -q 'not found' <<<"$installed"; then
    die "the installed nat-worker does not resolve:
$(grep 'not found' <<<"$installed")"
fi
while read -r name path; do
    path="$(realpath -m "$path")"
    case "$path" in
        "$lib_dir"/*|/lib/*|/lib64/*|/usr/lib/*|/usr/lib64/*) ;;
        *) die "the installed nat-worker loads $name from $path, outside $lib_dir" ;;
    esac
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' <<<"$installed")
say "installed into $prefix ($(du -sh "$lib_dir" | cut -f1) of libraries in lib/nat-orchestrator)"
