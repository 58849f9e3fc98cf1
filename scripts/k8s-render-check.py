#!/usr/bin/env python3
"""Checks what the rendered overlays must contain (run by scripts/k8s-validate.sh).

    k8s-render-check.py CPU.yaml GPU.yaml      # `kubectl kustomize deploy/k8s/overlays/{cpu,gpu}`

Each failed expectation is printed; the exit status is 1 when any failed.
"""
import sys

import yaml

failures = []


def expect(condition, what):
    if not condition:
        failures.append(what)


def objects(path):
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(path)) if d}


def container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def check_common(name, objs):
    coord = objs.get(("Deployment", "nat-coordinator"))
    expect(coord is not None, f"{name}: Deployment nat-coordinator")
    if coord:
        c = container(coord)
        # Leader election: two or more coordinators, replaced one at a time, each with a unique id.
        expect(coord["spec"]["replicas"] >= 2, f"{name}: coordinator replicas >= 2 (leader election)")
        strategy = coord["spec"]["strategy"]
        expect(strategy["type"] == "RollingUpdate"
               and strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0,
               f"{name}: coordinator RollingUpdate with maxUnavailable 0")
        instance = env(c).get("NAT_INSTANCE_ID") or {}
        expect(instance.get("fieldRef", {}).get("fieldPath") == "metadata.name",
               f"{name}: NAT_INSTANCE_ID from the pod name")
        expect(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{name}: coordinator readiness /readyz")
        expect(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{name}: coordinator liveness /healthz")
        url = env(c).get("NAT_DATABASE_URL") or {}
        expect(url.get("secretKeyRef", {}).get("name") == "nat-database",
               f"{name}: NAT_DATABASE_URL from Secret nat-database")
    svc = objs.get(("Service", "nat-coordinator"))
    ports = {p["name"]: p["port"] for p in (svc or {}).get("spec", {}).get("ports", [])}
    expect(ports == {"grpc": 50051, "http": 8080}, f"{name}: Service nat-coordinator grpc 50051 + http 8080")
    for kind in ("Deployment",):
        for (k, n), d in objs.items():
            if k != kind:
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        expect(r in res.get(part, {}), f"{name}: {n}/{c['name']} resources.{part}.{r}")
            sc = d["spec"]["template"]["spec"].get("securityContext", {})
            expect(sc.get("runAsNonRoot") is True, f"{name}: {n} runAsNonRoot")
    expect(objs.get(("PodDisruptionBudget", "nat-coordinator")) is not None,
           f"{name}: PodDisruptionBudget nat-coordinator")
    pdb = objs.get(("PodDisruptionBudget", "nat-worker"))
    expect(pdb is not None, f"{name}: PodDisruptionBudget nat-worker")
    netpol = objs.get(("NetworkPolicy", "nat-worker"))
    expect(netpol is not None, f"{name}: NetworkPolicy nat-worker")
    if netpol:
        egress = netpol["spec"]["egress"]
        targets = [t for rule in egress for t in rule.get("to", [])]
        coordinator_rule = [r for r in egress if any(
            t.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "nat-coordinator"
            for t in r.get("to", []))]
        expect(len(coordinator_rule) == 1 and [p["port"] for p in coordinator_rule[0]["ports"]] == [50051],
               f"{name}: workers reach the coordinator on 50051")
        expect(all(t.get("podSelector") for t in targets) and all(r.get("to") for r in egress),
               f"{name}: worker egress only to selected pods (coordinator, DNS)")
        expect("Egress" in netpol["spec"]["policyTypes"], f"{name}: NetworkPolicy restricts egress")
    for sm in ("nat-coordinator", "nat-worker"):
        expect(("ServiceMonitor", sm) in objs, f"{name}: ServiceMonitor {sm}")
    rule = objs.get(("PrometheusRule", "nat-orchestrator"))
    alerts = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
    expect(rule is not None and rule["spec"]["groups"] == alerts["groups"],
           f"{name}: PrometheusRule groups equal deploy/prometheus/alerts.yml")
    return objs[("Deployment", "nat-worker")]


def main():
    cpu = objects(sys.argv[1])
    gpu = objects(sys.argv[2])
    cpu_worker = container(check_common("cpu", cpu))
    gpu_deploy = check_common("gpu", gpu)
    gpu_worker = container(gpu_deploy)
    expect(env(cpu_worker).get("NAT_DEVICES") == "cpu", "cpu: worker NAT_DEVICES=cpu")
    expect("nvidia.com/gpu" not in str(cpu_worker["resources"]), "cpu: worker requests no GPU")
    expect(gpu_worker["resources"]["limits"].get("nvidia.com/gpu") == "1", "gpu: worker limits nvidia.com/gpu 1")
    pod = gpu_deploy["spec"]["template"]["spec"]
    expect(pod.get("nodeSelector", {}).get("nvidia.com/gpu.present") == "true", "gpu: nodeSelector")
    expect(any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), "gpu: GPU toleration")
    for failure in failures:
        print(f"k8s-render-check: missing or wrong: {failure}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"k8s-render-check: cpu and gpu overlays have what they must ({len(cpu)} + {len(gpu)} objects)")


if __name__ == "__main__":
    main()
