#!/usr/bin/env python3
"""Checks on rendered Kubernetes manifests that a schema cannot make.

    check.py OVERLAY_NAME RENDERED.yaml

The schema check (kubernetes-validate) says every object is well-formed; this
says the platform's rules hold in what an overlay renders:

- every workload runs as a numeric non-root user, with a read-only root file
  system, no privilege escalation, every capability dropped, RuntimeDefault
  seccomp, no service-account token, requests and limits on every container;
- every idmesh Deployment has readiness, liveness and startup probes, and a
  Service, a PodDisruptionBudget and a HorizontalPodAutoscaler of its own,
  and reads its NATS nkey seed from a Secret of its own, mounted read-only;
  there is one user-store Deployment per region;
- no Secret object is rendered and no secret-looking variable has a literal
  value (secrets are referenced, never inlined);
- a default-deny NetworkPolicy exists, and only edge-guard's public port is
  open to sources outside the namespace;
- in an overlay named *-eu*, the EU stores and every PostgreSQL workload sit
  on nodes labelled idmesh.io/jurisdiction=eu, and the EU stores are left out
  of the generic PostgreSQL egress policy.

Prints one line per failed rule and "N passed, N failed" last; exit code 1 on
any failure.
"""

import re
import sys

import yaml

REGIONS = ["wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr"]
SERVICES = ["edge-guard", "account", "auth", "session", "user", "deletion-worker", "webhook"]
SECRET_NAME = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET|DATABASE_URL|REDIS_URL|SEED)$")


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def rule(self, ok, what):
        """Counts one rule; returns whether it held."""
        ok = bool(ok)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAILED {what}")
        return ok


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def check_workload(c, w):
    name = f'{w["kind"]}/{w["metadata"]["name"]}'
    pod = w["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    c.rule(psc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    c.rule(
        isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0,
        f"{name}: numeric non-root runAsUser",
    )
    c.rule(
        psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        f"{name}: RuntimeDefault seccomp",
    )
    c.rule(pod.get("automountServiceAccountToken") is False, f"{name}: no service-account token")
    for ctr in pod["containers"] + pod.get("initContainers", []):
        cname = f'{name} container {ctr["name"]}'
        sc = ctr.get("securityContext", {})
        c.rule(sc.get("readOnlyRootFilesystem") is True, f"{cname}: read-only root")
        c.rule(sc.get("allowPrivilegeEscalation") is False, f"{cname}: no privilege escalation")
        c.rule(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{cname}: drops ALL capabilities")
        c.rule(not sc.get("privileged", False), f"{cname}: not privileged")
        res = ctr.get("resources", {})
        for kind in ("requests", "limits"):
            c.rule(
                {"cpu", "memory"} <= set(res.get(kind, {})),
                f"{cname}: cpu and memory {kind}",
            )
        for env in ctr.get("env", []):
            if SECRET_NAME.search(env["name"]):
                c.rule(
                    "value" not in env and "secretKeyRef" in env.get("valueFrom", {}),
                    f"{cname}: {env['name']} comes from a Secret",
                )


def node_is_eu(pod):
    terms = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    return bool(terms) and all(
        any(
            e["key"] == "idmesh.io/jurisdiction" and e["operator"] == "In" and e["values"] == ["eu"]
            for e in t.get("matchExpressions", [])
        )
        for t in terms
    )


def main():
    overlay, path = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    c = Checker()
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    c.rule("Secret" not in by_kind, "no Secret object is rendered (secrets are referenced)")
    for w in workloads(docs):
        check_workload(c, w)

    expected = SERVICES + [f"user-store-{r}" for r in REGIONS]
    deployments = by_kind.get("Deployment", {})
    for name in expected:
        d = deployments.get(name)
        if not c.rule(d is not None, f"Deployment {name} exists"):
            continue
        ctr = d["spec"]["template"]["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            c.rule(probe in ctr, f"Deployment {name}: {probe}")
        labels = d["spec"]["selector"]["matchLabels"]
        for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            obj = by_kind.get(kind, {}).get(name)
            c.rule(obj is not None, f"{kind} {name} exists")
            if obj is None:
                continue
            if kind == "Service":
                c.rule(obj["spec"]["selector"] == labels, f"Service {name} selects its pods")
            elif kind == "PodDisruptionBudget":
                c.rule(obj["spec"]["selector"]["matchLabels"] == labels, f"PDB {name} selects its pods")
            else:
                c.rule(obj["spec"]["scaleTargetRef"]["name"] == name, f"HPA {name} scales it")
        pod = d["spec"]["template"]["spec"]
        env = {e["name"]: e for e in ctr.get("env", [])}
        seed_vars = [v for v in env if v.endswith("_NATS_NKEY_SEED_FILE")]
        seed_ok = False
        if len(seed_vars) == 1:
            path = env[seed_vars[0]].get("value", "")
            for m in ctr.get("volumeMounts", []):
                if path.startswith(m["mountPath"].rstrip("/") + "/"):
                    vol = next((v for v in pod.get("volumes", []) if v["name"] == m["name"]), {})
                    seed_ok = (
                        m.get("readOnly") is True
                        and vol.get("secret", {}).get("secretName") == f"idmesh-nkey-{name}"
                    )
        c.rule(seed_ok, f"Deployment {name}: NATS seed from its own Secret idmesh-nkey-{name}, read-only")
        if name.startswith("user-store-"):
            region = name.removeprefix("user-store-")
            env = {e["name"]: e for e in ctr.get("env", [])}
            c.rule(
                env.get("STORE_REGION", {}).get("value") == region,
                f"{name}: STORE_REGION={region}",
            )

    policies = by_kind.get("NetworkPolicy", {})
    deny = [
        p
        for p in policies.values()
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    c.rule(bool(deny), "a default-deny NetworkPolicy (ingress and egress)")
    for p in policies.values():
        for rule in p["spec"].get("ingress", []) or []:
            open_to_all = not rule.get("from")
            if open_to_all:
                comp = p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
                ports = [x.get("port") for x in rule.get("ports", [])]
                c.rule(
                    comp == "edge-guard" and ports == [8080],
                    f"NetworkPolicy {p['metadata']['name']}: only edge-guard:8080 is open to everyone",
                )

    edge = by_kind.get("Service", {}).get("edge-guard")
    if edge is not None:
        exposed = edge["spec"].get("type") in ("LoadBalancer", "NodePort")
        ports = [p["targetPort"] for p in edge["spec"]["ports"]]
        c.rule(ports == ["http"], "the edge-guard Service carries the public port only")
        for s in by_kind.get("Service", {}).values():
            if s["metadata"]["name"] != "edge-guard":
                c.rule(
                    s["spec"].get("type", "ClusterIP") == "ClusterIP",
                    f"Service {s['metadata']['name']} is internal",
                )
        if overlay.startswith("production"):
            c.rule(exposed, "production exposes edge-guard")

    if "-eu" in overlay:
        for region in ("weur", "eeur"):
            d = deployments.get(f"user-store-{region}")
            c.rule(
                d is not None and node_is_eu(d["spec"]["template"]["spec"]),
                f"user-store-{region} only on EU nodes",
            )
        for region in set(REGIONS) - {"weur", "eeur"}:
            d = deployments.get(f"user-store-{region}")
            c.rule(
                d is not None and not node_is_eu(d["spec"]["template"]["spec"]),
                f"user-store-{region} is not pinned to the EU",
            )
        pg = [w for w in workloads(docs) if "postgres" in w["metadata"]["name"]]
        c.rule(bool(pg), "the EU overlay carries its PostgreSQL")
        for w in pg:
            c.rule(node_is_eu(w["spec"]["template"]["spec"]), f"{w['metadata']['name']} only on EU nodes")
        generic = policies.get("egress-postgres", {}).get("spec", {}).get("podSelector", {})
        selected = [v for e in generic.get("matchExpressions", []) for v in e.get("values", [])]
        c.rule(
            "user-store-weur" not in selected and "user-store-eeur" not in selected,
            "EU stores are not in the generic PostgreSQL egress policy",
        )

    print(f"k8s {overlay}: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
