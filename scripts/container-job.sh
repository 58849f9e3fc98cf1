#!/usr/bin/env bash
# Runs the containers tests' job: an `evaluate` job on the 8x8 digits (two architectures, smoke
# budget), submitted with natctl to a coordinator, and checks its result (`natctl result -o json`):
# the job succeeded and both architectures succeeded with an accuracy in (0, 1].
#
#   scripts/container-job.sh NATCTL COORDINATOR_URL [TIMEOUT_SECONDS]
#
# Used by scripts/container-test.sh and scripts/compose-test.sh. Prints the job's time.
set -euo pipefail
natctl=$1
export NAT_COORDINATOR=$2
timeout=${3:-600}
die() { echo "container-job: $*" >&2; exit 1; }

job_file="$(mktemp -t nat-job.XXXXXX.yaml)"
result="$(mktemp -t nat-result.XXXXXX.json)"
trap 'rm -f "$job_file" "$result"' EXIT
cat >"$job_file" <<'JOB'
kind: evaluate
name: container-test
dataset: digits
seed: 7
architectures:
  - darts-v2
  - resnet-block
budget:
  preset: smoke
JOB
job=$("$natctl" submit -f "$job_file" | tail -n1)
echo "   job $job"
start=$(date +%s)
state=""
while :; do
    if "$natctl" result "$job" -o json >"$result" 2>/dev/null; then
        state=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("state",""))' "$result")
        case "$state" in succeeded|failed|cancelled) break ;; esac
    fi
    [ $(( $(date +%s) - start )) -lt "$timeout" ] \
        || die "job $job did not finish within $timeout s (state '$state')"
    sleep 2
done
python3 - "$result" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
archs = result.get("architectures") or []
if result.get("state") != "succeeded" or len(archs) != 2:
    sys.exit(f"container-job: job {result.get('state')} with {len(archs)} architectures: {result}")
for a in archs:
    acc = a.get("accuracy")
    if a.get("state") != "succeeded" or not isinstance(acc, (int, float)) or not 0 < acc <= 1:
        sys.exit(f"container-job: architecture result out of range: {a}")
    print(f"   architecture {a['index']}: accuracy {acc:.3f}, trained in {a['wall_seconds']:.1f} s")
PY
echo "   job $job succeeded in $(( $(date +%s) - start )) s"
