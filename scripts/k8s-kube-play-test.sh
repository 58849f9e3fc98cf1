#!/usr/bin/env bash
# `make test-kube`: a smoke run of the Kubernetes manifests with `podman kube play`.
#
# Renders deploy/k8s/overlays/cpu (kubectl kustomize) and keeps what a single host can run: the
# coordinator Deployment and its ConfigMap and the worker Deployment (1 replica), unchanged but
# for what a cluster would provide: `hostNetwork: true` on free ports instead of Services, the
# database URL as a plain value instead of the Secret, hostPath folders instead of the PVC and
# emptyDirs. Adds a PostgreSQL Deployment, plays it, runs the digits job of
# scripts/container-job.sh, then `podman kube down`. Images: those of `make test-containers`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
: "${NAT_CACHE_DIR:=$HOME/.cache/nat-orchestrator}"
: "${NAT_DATA_DIR:=$NAT_CACHE_DIR/data}"
start=$(date +%s)
die() { echo "kube-play-test: $*" >&2; exit 1; }
eval "$(scripts/container-setup.sh | tail -n1)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
podman --runtime runc image exists "localhost/nat-worker:$version" \
    || die "images missing: run \`make test-containers\` first"
python="$NAT_CACHE_DIR/deploy-venv/bin/python"
[ -x "$python" ] || scripts/k8s-validate.sh >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d -t nat-kube.XXXXXX)"
play="$work/play.yaml"
cleanup() {
    podman --runtime runc kube down "$play" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir -m 1777 "$work/checkpoints" "$work/state" "$work/tmp"
kubectl kustomize deploy/k8s/overlays/cpu >"$work/rendered.yaml"
grpc=$(free_port); http=$(free_port); pg=$(free_port); metrics=$(free_port)
password="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
"$python" - "$work/rendered.yaml" "$play" "$work" "$NAT_DATA_DIR" "$grpc" "$http" "$pg" "$metrics" "$password" <<'PY'
import sys, yaml
src, out, work, data, grpc, http, pg, metrics, password = sys.argv[1:]
objs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(src)) if d}
config = objs[("ConfigMap", "nat-coordinator")]
# Host loopback only, so no tokens (the manifests' NAT_AUTH=token is covered by tests/auth.rs).
config["data"].update({"NAT_LISTEN": f"127.0.0.1:{grpc}", "NAT_HTTP_LISTEN": f"127.0.0.1:{http}",
                       "NAT_AUTH": "none"})
url = f"postgres://nat:{password}@127.0.0.1:{pg}/nat"

def host_volumes(pod, paths):
    for v in pod.get("volumes", []):
        v.pop("emptyDir", None); v.pop("persistentVolumeClaim", None)
        v["hostPath"] = {"path": paths[v["name"]], "type": "Directory"}

coord = objs[("Deployment", "nat-coordinator")]
# One coordinator on the host network (two would share its port); its instance id a literal.
coord["spec"]["replicas"] = 1
pod = coord["spec"]["template"]["spec"]
pod.pop("affinity", None)
pod["hostNetwork"] = True
c = pod["containers"][0]
c["env"] = [e for e in c["env"] if e["name"] not in ("NAT_DATABASE_URL", "NAT_INSTANCE_ID")] + [
    {"name": "NAT_DATABASE_URL", "value": url}, {"name": "NAT_INSTANCE_ID", "value": "kube-play-coordinator"}]
host_volumes(pod, {"state": f"{work}/state"})

worker = objs[("Deployment", "nat-worker")]
worker["spec"]["replicas"] = 1
pod = worker["spec"]["template"]["spec"]
pod["hostNetwork"] = True
c = pod["containers"][0]
env = {e["name"]: e for e in c["env"]}
env["NAT_COORDINATOR"] = {"name": "NAT_COORDINATOR", "value": f"http://127.0.0.1:{grpc}"}
env["NAT_METRICS_LISTEN"] = {"name": "NAT_METRICS_LISTEN", "value": f"127.0.0.1:{metrics}"}
env["NAT_THREADS"] = {"name": "NAT_THREADS", "value": "1"}
env["NAT_WORKER_NAME"] = {"name": "NAT_WORKER_NAME", "value": "kube-play-worker"}
c["env"] = list(env.values())
if "livenessProbe" in c:
    c["livenessProbe"]["httpGet"]["port"] = int(metrics)
c["ports"] = []
host_volumes(pod, {"datasets": data, "checkpoints": f"{work}/checkpoints", "tmp": f"{work}/tmp"})
coord["spec"]["template"]["spec"]["containers"][0]["ports"] = []
for probe in ("readinessProbe", "livenessProbe"):
    coord["spec"]["template"]["spec"]["containers"][0][probe]["httpGet"]["port"] = int(http)

postgres = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "nat-postgres", "labels": {"app.kubernetes.io/name": "nat-postgres"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "nat-postgres"}},
             "template": {"metadata": {"labels": {"app.kubernetes.io/name": "nat-postgres"}},
                          "spec": {"hostNetwork": True, "containers": [{
                              "name": "postgres", "image": "docker.io/library/postgres:15-bookworm",
                              "env": [{"name": "POSTGRES_USER", "value": "nat"}, {"name": "POSTGRES_DB", "value": "nat"},
                                      {"name": "POSTGRES_PASSWORD", "value": password}, {"name": "PGPORT", "value": pg}]}]}}}}
with open(out, "w") as f:
    yaml.safe_dump_all([config, postgres, coord, worker], f, sort_keys=False)
PY
echo "== podman kube play (PostgreSQL, coordinator, 1 CPU worker from overlays/cpu)"
podman --runtime runc kube play "$play" >/dev/null
ready=""
for _ in $(seq 1 120); do
    ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/readyz" || true)
    [ "$ready" = 200 ] && break
    sleep 1
done
[ "$ready" = 200 ] || { podman --runtime runc pod ps >&2; die "the coordinator's /readyz answered '$ready', not 200"; }
echo "   coordinator ready (/readyz 200)"
scripts/container-job.sh target/dist/bin/natctl "http://127.0.0.1:$grpc" 600
echo "== kube play smoke run passed in $(( $(date +%s) - start )) s"
