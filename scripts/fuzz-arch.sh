#!/usr/bin/env bash
# Fuzz the nat-arch parsers (cargo-fuzz / libFuzzer) for a short, bounded time per target.
#
#   scripts/fuzz-arch.sh [SECONDS_PER_TARGET]     (default: $FUZZ_SECONDS or 20)
#
# Installs cargo-fuzz if missing (idempotent) and needs the nightly toolchain. Targets are listed
# by `cargo fuzz list` (fuzz/fuzz_targets/): parse_json, parse_darts, parse_any. Each run starts
# from the committed seeds in fuzz/seeds/<target>/ plus whatever fuzz/corpus/<target>/ already
# holds (new inputs are written there; it is git-ignored). Exits 0 when nothing crashes; on a
# crash libFuzzer writes the input to fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail

secs="${1:-${FUZZ_SECONDS:-20}}"
case "$secs" in
  ''|*[!0-9]*) echo "fuzz-arch: SECONDS_PER_TARGET must be a positive integer, got '$secs'" >&2; exit 2 ;;
esac
if [ "$secs" -lt 1 ]; then
  echo "fuzz-arch: SECONDS_PER_TARGET must be at least 1" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
# Nightly + sanitizer builds share nothing with the workspace's stable builds; keep them apart so
# they neither wait on nor invalidate the shared target directory.
export CARGO_TARGET_DIR="${NAT_FUZZ_TARGET_DIR:-$root/fuzz/target}"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz-arch: installing the nightly toolchain (cargo-fuzz needs it)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-arch: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --target-dir "$CARGO_TARGET_DIR/install"
fi

targets="$(cargo +nightly fuzz list)"
if [ -z "$targets" ]; then
  echo "fuzz-arch: no fuzz targets found" >&2
  exit 1
fi

for t in $targets; do
  mkdir -p "corpus/$t" "seeds/$t"
  echo "fuzz-arch: $t for ${secs}s" >&2
  # -max_len keeps inputs realistic; -rss_limit_mb guards the shared CI machine.
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzz-arch: no crashes in: $(echo $targets | tr '\n' ' ')" >&2
