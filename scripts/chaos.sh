#!/usr/bin/env bash
# `make chaos` / `make chaos-quick`: the fault-injection suite (bench/chaos, docs/RELIABILITY.md).
#
# Idempotent preparation, then `nat-chaos "$@"`:
#   - the system tools the run uses, installed with apt-get when missing: the PostgreSQL 15
#     server binaries (the run starts its own private server, which it restarts), libfaketime
#     (package `faketime`, the clock-jump attack), `ip` (iproute2, the partition's network
#     namespace), `kill` (procps), `runuser` (util-linux: PostgreSQL runs as `postgres`);
#   - release builds of nat-coordinator and nat-chaos;
#   - for the real workers: libtorch (`make setup`, a no-op when done), a release nat-worker and
#     the digits dataset. When any of these cannot be had (no network for the PyTorch wheel, a
#     failed build, NAT_CHAOS_REAL_WORKERS=0), the run goes on with `--real-workers 0` and says
#     so at the start and in its figures: simulated workers then stand in for the partitioned and
#     clock-jumped real ones.
#
#   scripts/chaos.sh            the full run (>= 10,000 tasks, >= 200 workers, 2 coordinators)
#   scripts/chaos.sh --quick    the reduced run (about 2 minutes on 2 cores)
#   scripts/chaos.sh --help     every flag of nat-chaos
#
# NAT_CHAOS_PROFILE=debug uses debug builds instead (what `make test` has just built: its reduced
# run then needs no release build); the default is release.
#
# Needs root (network namespaces for the partition attack, PostgreSQL run as `postgres`).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${NAT_CACHE_DIR:=$HOME/.cache/nat-orchestrator}"
: "${CARGO_TARGET_DIR:=$NAT_CACHE_DIR/target}"
: "${NAT_DATA_DIR:=$NAT_CACHE_DIR/data}"
export NAT_CACHE_DIR CARGO_TARGET_DIR NAT_DATA_DIR
CARGO=${CARGO:-cargo}

say() { echo "chaos.sh: $*"; }

# The caller's own --real-workers (or --help) is respected as given.
real_given=no
for a in "$@"; do
    case "$a" in
        --real-workers|--real-workers=*) real_given=yes ;;
        -h|--help) real_given=yes ;;
    esac
done

apt_updated=no
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get is not available: install $* yourself"
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        say "not root: cannot apt-get install $*; install it yourself"
        return 1
    fi
    say "installing $* (apt-get)"
    if [ "$apt_updated" = no ]; then
        apt-get update -qq || say "apt-get update failed; trying the install anyway"
        apt_updated=yes
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The places nat-chaos looks (bench/chaos/src/fleet.rs, `libfaketime`).
have_faketime() {
    local f
    for f in /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 \
             /usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1 \
             /usr/lib/faketime/libfaketime.so.1; do
        [ -f "$f" ] && return 0
    done
    return 1
}

missing=()
have_faketime || missing+=(faketime)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || missing+=(procps)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}" || say "could not install ${missing[*]}: nat-chaos will say what it lacks"
fi

if ! command -v "$CARGO" >/dev/null 2>&1; then
    say "cargo is not on PATH: install a Rust toolchain (https://rustup.rs) first"
    exit 2
fi

profile="${NAT_CHAOS_PROFILE:-release}"
case "$profile" in
    release) build_flags=(--release) ;;
    debug) build_flags=() ;;
    *) say "NAT_CHAOS_PROFILE must be release or debug, not '$profile'"; exit 2 ;;
esac
bin="$CARGO_TARGET_DIR/$profile"
say "building nat-coordinator and nat-chaos ($profile)"
"$CARGO" build "${build_flags[@]}" -p nat-coordinator -p nat-chaos

# Real workers: libtorch, nat-worker, the digits dataset. Any failure falls back to 0.
real_args=()
if [ "$real_given" = no ]; then
    why=""
    if [ "${NAT_CHAOS_REAL_WORKERS:-1}" = 0 ]; then
        why="NAT_CHAOS_REAL_WORKERS=0"
    elif ! make --no-print-directory setup; then
        why="libtorch could not be set up (make setup failed; it downloads the PyTorch wheel)"
    elif ! "$CARGO" build "${build_flags[@]}" -p nat-worker; then
        why="nat-worker did not build (cargo build ${build_flags[*]} -p nat-worker failed)"
    elif ! scripts/fetch-data.sh --only digits "$NAT_DATA_DIR"; then
        why="the digits dataset could not be fetched (scripts/fetch-data.sh --only digits)"
    fi
    if [ -n "$why" ]; then
        echo
        say "=============================================================================="
        say "NO REAL WORKERS: $why."
        say "The run goes on with --real-workers 0: simulated workers stand in for the"
        say "partitioned and clock-jumped nat-worker processes. The figures say so too."
        say "=============================================================================="
        echo
        real_args=(--real-workers 0)
        export NAT_CHAOS_REAL_WORKERS_NOTE="$why"
    fi
fi

exec "$bin/nat-chaos" --coordinator-bin "$bin/nat-coordinator" --worker-bin "$bin/nat-worker" \
    "${real_args[@]}" "$@"
