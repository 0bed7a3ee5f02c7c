#!/usr/bin/env python3
"""Writes the per-service files of ops/k8s/base (one Deployment, Service,
PodDisruptionBudget and HorizontalPodAutoscaler per service and per region's
user-store), so that fifteen near-identical files cannot drift apart.

    ops/k8s/gen-base.py           rewrite them
    ops/k8s/gen-base.py --check   exit 1 if a committed file differs from
                                  what this writes (ops/deploy-checks.sh)

Edit this script, not the generated files; kustomization.yaml and
network-policies.yaml are written by hand.
"""

import os
import sys

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base")
CHECK = "--check" in sys.argv[1:]

REGIONS = ["wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr"]
EU = {"weur", "eeur"}

# name, binary, env prefix, port, needs (db, redis, smtp, https), resources, hpa(min,max)
SERVICES = [
    dict(name="edge-guard", bin="idm-edge-guard", prefix="EDGE", port=8080, ops=9080, redis=True,
         cpu=("250m", "1"), mem=("128Mi", "512Mi"), hpa=(2, 10)),
    dict(name="account", bin="idm-account", prefix="ACCOUNT", port=8081, db=True,
         cpu=("100m", "500m"), mem=("64Mi", "256Mi"), hpa=(2, 4)),
    dict(name="auth", bin="idm-auth", prefix="AUTH", port=8082, db=True, redis=True, smtp=True,
         cpu=("100m", "1"), mem=("64Mi", "256Mi"), hpa=(2, 6)),
    dict(name="session", bin="idm-session", prefix="SESSION", port=8083, db=True,
         cpu=("100m", "1"), mem=("64Mi", "256Mi"), hpa=(2, 6)),
    dict(name="user", bin="idm-user", prefix="USER", port=8084, db=True,
         cpu=("100m", "1"), mem=("64Mi", "256Mi"), hpa=(2, 6)),
    dict(name="deletion-worker", bin="idm-deletion-worker", prefix="DELETION", port=8086, db=True,
         cpu=("50m", "500m"), mem=("64Mi", "256Mi"), hpa=(2, 3)),
    dict(name="webhook", bin="idm-webhook", prefix="WEBHOOK", port=8087, db=True, https=True,
         cpu=("50m", "500m"), mem=("64Mi", "256Mi"), hpa=(2, 4)),
]
for r in REGIONS:
    SERVICES.append(dict(name=f"user-store-{r}", bin="idm-user-store", prefix="STORE", port=8090,
                         db=True, region=r, cpu=("500m", "2"), mem=("256Mi", "1Gi"), hpa=(2, 8)))

def env_secret(var, secret, key):
    return f"""            - name: {var}
              valueFrom:
                secretKeyRef:
                  name: {secret}
                  key: {key}
"""

def env_cm(var, key):
    return f"""            - name: {var}
              valueFrom:
                configMapKeyRef:
                  name: idmesh-config
                  key: {key}
"""

def labels(s, indent):
    pad = " " * indent
    out = f"{pad}app.kubernetes.io/name: idmesh\n{pad}app.kubernetes.io/component: {s['name']}\n"
    if "region" in s:
        out += f"{pad}idmesh.io/region: {s['region']}\n"
    return out

def selector(s, indent):
    pad = " " * indent
    return f"{pad}app.kubernetes.io/name: idmesh\n{pad}app.kubernetes.io/component: {s['name']}\n"

stale = []
for s in SERVICES:
    name, p = s["name"], s["prefix"]
    probe_port = "ops" if "ops" in s else "http"
    env = ""
    env += f"            - name: {p}_HTTP_ADDR\n              value: 0.0.0.0:{s['port']}\n"
    if "ops" in s:
        env += f"            - name: EDGE_OPS_ADDR\n              value: 0.0.0.0:{s['ops']}\n"
    if "region" in s:
        env += f"            - name: STORE_REGION\n              value: {s['region']}\n"
        env += "            # STORE_JURISDICTION: not read yet (the jurisdiction follows from the region).\n"
        env += env_secret("STORE_DATABASE_URL", f"idmesh-store-{s['region']}", "database-url")
    elif s.get("db"):
        env += env_secret(f"{p}_DATABASE_URL", "idmesh-global", "database-url")
    if s.get("redis"):
        env += env_secret(f"{p}_REDIS_URL", "idmesh-global", "redis-url")
    if name == "account":
        env += env_secret("ACCOUNT_OPERATOR_TOKEN", "idmesh-global", "operator-token")
    if name == "edge-guard":
        env += env_secret("EDGE_OPERATOR_TOKEN", "idmesh-global", "operator-token")
        # Keys the hashes that stand for email recipients in Redis.
        env += env_secret("EDGE_HASH_KEY", "idmesh-global", "edge-hash-key")
    if name in ("auth", "session", "user", "webhook"):
        env += env_secret(f"{p}_MASTER_KEY", "idmesh-global", f"{name}-master-key")
        # During a master-key rotation only: the key before it (optional;
        # docs/OPERATIONS.md "Keys and their rotation").
        env += f"""            - name: {p}_MASTER_KEY_PREVIOUS
              valueFrom:
                secretKeyRef:
                  name: idmesh-global
                  key: {name}-master-key-previous
                  optional: true
"""
    if name in ("session", "edge-guard"):
        # Seals signing keys on their way from session to the edges only.
        env += env_secret(f"{p}_KEY_TRANSPORT_KEY", "idmesh-global", "key-transport-key")
    if name == "auth":
        env += f"""            - name: AUTH_SMTP_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: idmesh-global
                  key: smtp-password
                  optional: true
"""
    ports = f"""            - name: http
              containerPort: {s['port']}
"""
    if "ops" in s:
        ports += f"""            - name: ops
              containerPort: {s['ops']}
"""
    # Every service logs in to NATS with its own nkey seed: a Secret of its
    # own (idmesh-nkey-<identity>, key "seed", from `idmctl nats-config`),
    # mounted into this Deployment only.
    env += f"""            - name: {p}_NATS_NKEY_SEED_FILE
              value: /var/run/idmesh/nats/seed
"""
    mounts = """          volumeMounts:
            - name: nats-nkey
              mountPath: /var/run/idmesh/nats
              readOnly: true
"""
    volumes = f"""      volumes:
        - name: nats-nkey
          secret:
            secretName: idmesh-nkey-{name}
            # 0440 (decimal here: YAML parsers disagree on a leading 0):
            # root:10001 through fsGroup, readable by that group only.
            defaultMode: 288
            items:
              - key: seed
                path: seed
"""
    if name == "auth":
        mounts += """            # AUTH_MAIL_TRANSPORT=files writes here; the root file system is read-only.
            - name: data
              mountPath: /var/lib/idmesh
"""
        volumes += """        - name: data
          emptyDir:
            sizeLimit: 64Mi
"""
    deploy = f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
{labels(s, 4)}spec:
  # No replicas: the HorizontalPodAutoscaler owns the count.
  revisionHistoryLimit: 5
  selector:
    matchLabels:
{selector(s, 6)}  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
{labels(s, 8)}      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "{s.get('ops', s['port'])}"
        prometheus.io/path: /metrics
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      # Replicas spread over zones and nodes where the cluster has them.
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
{selector(s, 14)}        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
{selector(s, 14)}      containers:
        - name: {name}
          image: idmesh
          imagePullPolicy: IfNotPresent
          command: ["{s['bin']}"]
          ports:
{ports}          envFrom:
            # Shared IDM_* settings and every service's non-secret settings
            # (each service reads only its own prefix).
            - configMapRef:
                name: idmesh-config
          env:
{env}          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            privileged: false
            capabilities:
              drop: ["ALL"]
          resources:
            requests:
              cpu: {s['cpu'][0]}
              memory: {s['mem'][0]}
            limits:
              cpu: "{s['cpu'][1]}"
              memory: {s['mem'][1]}
          startupProbe:
            httpGet:
              path: /healthz
              port: {probe_port}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: {probe_port}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: {probe_port}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
{mounts}{volumes}"""
    svc_ports = f"""    - name: http
      port: {s['port']}
      targetPort: http
"""
    if "ops" in s:
        # The ops port (metrics, ban admin) gets a Service of its own, so the
        # public Service never carries it.
        svc_ports += f"""---
apiVersion: v1
kind: Service
metadata:
  name: {name}-ops
  labels:
{labels(s, 4)}spec:
  type: ClusterIP
  selector:
{selector(s, 4)}  ports:
    - name: ops
      port: {s['ops']}
      targetPort: ops
"""
    service = f"""---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels:
{labels(s, 4)}spec:
  type: ClusterIP
  selector:
{selector(s, 4)}  ports:
{svc_ports}"""
    pdb = f"""---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}
  labels:
{labels(s, 4)}spec:
  maxUnavailable: 1
  selector:
    matchLabels:
{selector(s, 6)}"""
    hpa = f"""---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {name}
  labels:
{labels(s, 4)}spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {name}
  minReplicas: {s['hpa'][0]}
  maxReplicas: {s['hpa'][1]}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: 70
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
"""
    fname = f"{name}.yaml"
    what = name
    if "region" in s:
        what = f"user-store for region {s['region']}{' (EU)' if s['region'] in EU else ''}"
    head = (
        f"# {what}: Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler.\n"
        "# Generated by ops/k8s/gen-base.py: edit that, not this file.\n"
    )
    text = head + deploy + service + pdb + hpa
    path = os.path.join(BASE, fname)
    if CHECK:
        try:
            current = open(path).read()
        except FileNotFoundError:
            current = None
        if current != text:
            stale.append(fname)
    else:
        with open(path, "w") as out:
            out.write(text)

if stale:
    print("ops/k8s/base differs from ops/k8s/gen-base.py: " + ", ".join(stale), file=sys.stderr)
    print("run ops/k8s/gen-base.py and commit the result", file=sys.stderr)
    sys.exit(1)
