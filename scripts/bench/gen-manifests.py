#!/usr/bin/env python3
"""Generate a deterministic corpus of Kubernetes manifests for scripts/bench-preflight.

    gen-manifests.py [--files N] [--seed S] [--truth FILE] OUT_DIR

Writes N manifest files (default 20000) under OUT_DIR in a nested, repository-like layout
(team-XX/app-YYY/{base,overlays/ENV,...}/NAME.yaml): single-document files, ~30% multi-document
files (2-4 documents separated by `---`), some `kind: List` files (a few typed `*List`s), mostly
`.yaml`, some `.yml` and a few `.json`, plus a few kustomization.yaml / values.yaml files (YAML that
is not a Kubernetes object). Documents look like real ones (containers with env, resources,
probes, volumes; config files in ConfigMaps; ~1-3 KB for workloads). About 10% of the documents
use a deprecated or removed apiVersion. A few files have realistic oddities: CRLF line endings,
a UTF-8 byte-order mark, helm-style `# Source:` comments, `--- # comment` separators, empty
documents, quoted apiVersions, kind before apiVersion.

Same arguments, same seed: byte-identical corpus (Python's stdlib only, no hash-order effects).

--truth FILE writes a JSON ground truth: every object that uses a deprecated/removed apiVersion,
as {file, kind, apiVersion, lineMin, lineMax, note}, where [lineMin, lineMax] is the range a
reported line may fall in (from the first line of its YAML document, including leading comments,
to its apiVersion/kind line; a List item: from its `- ` line to its apiVersion line; JSON: 1).
Keep FILE outside OUT_DIR (the tools would scan it).
"""
import argparse
import base64
import json
import os
import random
import re
import sys

# ---------------------------------------------------------------------------------------------
# API versions

# (kind, current apiVersion) used for ordinary documents, with weights.
CURRENT = [
    ("Deployment", "apps/v1", 18),
    ("Service", "v1", 16),
    ("ConfigMap", "v1", 14),
    ("Secret", "v1", 6),
    ("Ingress", "networking.k8s.io/v1", 6),
    ("CronJob", "batch/v1", 4),
    ("Job", "batch/v1", 2),
    ("HorizontalPodAutoscaler", "autoscaling/v2", 5),
    ("PodDisruptionBudget", "policy/v1", 4),
    ("NetworkPolicy", "networking.k8s.io/v1", 4),
    ("ServiceAccount", "v1", 5),
    ("Role", "rbac.authorization.k8s.io/v1", 2),
    ("RoleBinding", "rbac.authorization.k8s.io/v1", 2),
    ("ClusterRole", "rbac.authorization.k8s.io/v1", 1),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", 1),
    ("StatefulSet", "apps/v1", 3),
    ("DaemonSet", "apps/v1", 1),
    ("PersistentVolumeClaim", "v1", 2),
    ("Namespace", "v1", 2),
    ("ResourceQuota", "v1", 1),
    ("LimitRange", "v1", 1),
    ("PriorityClass", "scheduling.k8s.io/v1", 0.5),
    ("ServiceMonitor", "monitoring.coreos.com/v1", 2),
    ("Certificate", "cert-manager.io/v1", 1),
    ("CustomResourceDefinition", "apiextensions.k8s.io/v1", 0.5),
    ("FlowSchema", "flowcontrol.apiserver.k8s.io/v1", 0.3),
    ("PriorityLevelConfiguration", "flowcontrol.apiserver.k8s.io/v1", 0.2),
    ("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1", 0.3),
    ("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", 0.2),
]

# (kind, deprecated or removed apiVersion) used for ~10% of the documents, with weights.
DEPRECATED = [
    ("Ingress", "extensions/v1beta1", 8),
    ("Ingress", "networking.k8s.io/v1beta1", 10),
    ("Deployment", "extensions/v1beta1", 6),
    ("Deployment", "apps/v1beta1", 3),
    ("Deployment", "apps/v1beta2", 3),
    ("DaemonSet", "extensions/v1beta1", 2),
    ("DaemonSet", "apps/v1beta2", 1),
    ("StatefulSet", "apps/v1beta1", 2),
    ("StatefulSet", "apps/v1beta2", 2),
    ("NetworkPolicy", "extensions/v1beta1", 2),
    ("CronJob", "batch/v1beta1", 10),
    ("HorizontalPodAutoscaler", "autoscaling/v2beta1", 6),
    ("HorizontalPodAutoscaler", "autoscaling/v2beta2", 8),
    ("PodDisruptionBudget", "policy/v1beta1", 10),
    ("PodSecurityPolicy", "policy/v1beta1", 4),
    ("PodSecurityPolicy", "extensions/v1beta1", 1),
    ("Role", "rbac.authorization.k8s.io/v1beta1", 3),
    ("RoleBinding", "rbac.authorization.k8s.io/v1beta1", 3),
    ("ClusterRole", "rbac.authorization.k8s.io/v1beta1", 2),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1beta1", 2),
    ("PriorityClass", "scheduling.k8s.io/v1beta1", 2),
    ("CustomResourceDefinition", "apiextensions.k8s.io/v1beta1", 2),
    ("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1beta1", 1),
    ("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1beta1", 1),
    ("FlowSchema", "flowcontrol.apiserver.k8s.io/v1beta1", 1),
    ("FlowSchema", "flowcontrol.apiserver.k8s.io/v1beta2", 1),
    ("PriorityLevelConfiguration", "flowcontrol.apiserver.k8s.io/v1beta2", 1),
    ("RuntimeClass", "node.k8s.io/v1beta1", 1),
    ("CSIDriver", "storage.k8s.io/v1beta1", 1),
    ("Certificate", "cert-manager.io/v1alpha2", 1),
]
DEPRECATED_SET = {(k, v) for k, v, _ in DEPRECATED}
DEPRECATED_SHARE = 0.10

TEAMS = ["payments", "checkout", "search", "platform", "identity", "data", "ml", "web", "mobile-api",
         "billing", "catalog", "notifications", "observability", "security", "growth", "infra",
         "ledger", "risk", "media", "support", "partners", "logistics", "pricing", "ads", "core"]
WORDS = ["api", "worker", "gateway", "frontend", "backend", "auth", "cache", "queue", "scheduler",
         "indexer", "exporter", "proxy", "sync", "reporter", "ingest", "router", "store", "events",
         "webhook", "admin", "metrics", "cart", "orders", "users", "profile", "feed", "mailer",
         "renderer", "uploader", "resolver", "ledger", "audit", "thumbnails", "recommender"]
ENVS = ["dev", "staging", "prod", "prod-eu", "prod-us"]


# ---------------------------------------------------------------------------------------------
# A small block-style YAML emitter (stdlib has none)

_RESERVED = {"", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n"}
_PLAIN = re.compile(r"[A-Za-z0-9_/.$][A-Za-z0-9_/.:@+=,()$ -]*\Z")
_NUMBERY = re.compile(r"[-+.]?[0-9][0-9_.eExXoObB:+-]*\Z")


def scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if (s.lower() in _RESERVED or _NUMBERY.match(s) or not _PLAIN.match(s) or ": " in s
            or s.endswith(":") or s.endswith(" ") or " #" in s):
        return json.dumps(s)
    return s


def emit(obj, indent, out, seq_indent):
    """Append lines for a mapping or sequence at `indent` spaces."""
    pad = " " * indent
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = scalar(k)
            if isinstance(v, dict):
                if v:
                    out.append(f"{pad}{key}:")
                    emit(v, indent + 2, out, seq_indent)
                else:
                    out.append(f"{pad}{key}: {{}}")
            elif isinstance(v, list):
                if v:
                    out.append(f"{pad}{key}:")
                    emit(v, indent + seq_indent, out, seq_indent)
                else:
                    out.append(f"{pad}{key}: []")
            elif isinstance(v, str) and "\n" in v:
                chomp = "" if v.endswith("\n") else "-"
                out.append(f"{pad}{key}: |{chomp}")
                for line in v.rstrip("\n").split("\n"):
                    out.append(f"{pad}  {line}" if line else "")
            else:
                out.append(f"{pad}{key}: {scalar(v)}")
    else:
        for item in obj:
            if isinstance(item, dict) and item:
                sub = []
                emit(item, indent + 2, sub, seq_indent)
                sub[0] = f"{pad}- " + sub[0][indent + 2:]
                out.extend(sub)
            elif isinstance(item, list) and item:
                sub = []
                emit(item, indent + 2, sub, seq_indent)
                sub[0] = f"{pad}- " + sub[0][indent + 2:]
                out.extend(sub)
            else:
                out.append(f"{pad}- {scalar(item)}")


# ---------------------------------------------------------------------------------------------
# Object builders

class Ctx:
    def __init__(self, rng, team, app, env):
        self.rng, self.team, self.app, self.env = rng, team, app, env
        self.ns = f"{team}-{env}" if rng.random() < 0.8 else team

    def labels(self, component="server"):
        l = {"app.kubernetes.io/name": self.app, "app.kubernetes.io/part-of": self.team,
             "app.kubernetes.io/component": component}
        if self.rng.random() < 0.5:
            l["app.kubernetes.io/managed-by"] = self.rng.choice(["kustomize", "Helm", "argocd"])
        if self.rng.random() < 0.4:
            l["env"] = self.env
        return l

    def meta(self, name=None, namespaced=True, component="server"):
        m = {"name": name or self.app, "labels": self.labels(component)}
        if namespaced:
            m = {"name": m["name"], "namespace": self.ns, "labels": m["labels"]}
        if self.rng.random() < 0.3:
            m["annotations"] = {"owner": f"{self.team}@example.com",
                                "runbook": f"https://runbooks.example.com/{self.team}/{self.app}"}
        return m

    def selector(self):
        return {"app.kubernetes.io/name": self.app, "app.kubernetes.io/component": "server"}


def container(c, name, job=False):
    r = c.rng
    port = r.choice([8080, 8000, 3000, 9000, 5000, 8443])
    env = []
    for i in range(r.randint(4, 12)):
        key = r.choice(["LOG_LEVEL", "PORT", "DB_HOST", "DB_NAME", "REDIS_URL", "FEATURE_FLAGS",
                        "OTEL_EXPORTER_OTLP_ENDPOINT", "JAVA_OPTS", "GOMAXPROCS", "REGION",
                        "CACHE_TTL", "WORKERS", "SENTRY_DSN", "HTTP_TIMEOUT", "QUEUE_NAME"]) + f"_{i}"
        kind = r.random()
        if kind < 0.6:
            val = r.choice(["info", "debug", str(port), f"{c.app}.{c.ns}.svc.cluster.local", "true", "30s",
                            "-Xms512m -Xmx1g -XX:+UseG1GC", f"redis://redis.{c.ns}:6379/0", "eu-west-1", "4"])
            env.append({"name": key, "value": val})
        elif kind < 0.8:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": f"{c.app}-secrets", "key": key.lower()}}})
        elif kind < 0.9:
            env.append({"name": key, "valueFrom": {"configMapKeyRef": {"name": f"{c.app}-config", "key": key.lower()}}})
        else:
            env.append({"name": key, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    cpu = r.choice([50, 100, 250, 500, 1000])
    mem = r.choice([64, 128, 256, 512, 1024, 2048])
    ctr = {
        "name": name,
        "image": f"registry.example.com/{c.team}/{c.app}:{r.randint(1, 9)}.{r.randint(0, 40)}.{r.randint(0, 20)}",
        "imagePullPolicy": r.choice(["IfNotPresent", "Always"]),
    }
    if not job:
        ctr["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        if r.random() < 0.3:
            ctr["ports"].append({"name": "metrics", "containerPort": 9090, "protocol": "TCP"})
    else:
        ctr["command"] = ["/bin/sh", "-c"]
        ctr["args"] = [f"/app/bin/{c.app} --mode=batch --since=24h"]
    ctr["env"] = env
    if r.random() < 0.4:
        ctr["envFrom"] = [{"configMapRef": {"name": f"{c.app}-config"}}]
    ctr["resources"] = {"requests": {"cpu": f"{cpu}m", "memory": f"{mem}Mi"},
                        "limits": {"cpu": f"{cpu * 2}m", "memory": f"{mem * 2}Mi"}}
    if not job:
        ctr["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": r.choice([5, 10, 30]),
                                "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3}
        ctr["readinessProbe"] = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2}
        if r.random() < 0.3:
            ctr["startupProbe"] = {"tcpSocket": {"port": port}, "failureThreshold": 30, "periodSeconds": 5}
    ctr["volumeMounts"] = [{"name": "config", "mountPath": "/etc/app", "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]
    ctr["securityContext"] = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                              "capabilities": {"drop": ["ALL"]}}
    return ctr


def pod_spec(c, job=False):
    r = c.rng
    spec = {}
    if r.random() < 0.7:
        spec["serviceAccountName"] = c.app
    ctrs = [container(c, c.app, job)]
    if r.random() < 0.2:
        ctrs.append(container(c, "sidecar", job))
    spec["containers"] = ctrs
    if job:
        spec["restartPolicy"] = "OnFailure"
    if r.random() < 0.2:
        spec["initContainers"] = [{"name": "migrate", "image": f"registry.example.com/{c.team}/{c.app}-migrations:latest",
                                   "command": ["/migrate", "up"], "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}]
    spec["volumes"] = [{"name": "config", "configMap": {"name": f"{c.app}-config"}}, {"name": "tmp", "emptyDir": {}}]
    if r.random() < 0.3:
        spec["nodeSelector"] = {"kubernetes.io/os": "linux", "node.kubernetes.io/pool": r.choice(["general", "compute", "memory"])}
    if r.random() < 0.2:
        spec["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": c.team, "effect": "NoSchedule"}]
    if r.random() < 0.25:
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": c.selector()},
                                                "topologyKey": "kubernetes.io/hostname"}}]}}
    spec["securityContext"] = {"fsGroup": 2000, "runAsUser": 1000}
    return spec


def template(c, job=False):
    t = {"metadata": {"labels": dict(c.selector(), **{"app.kubernetes.io/part-of": c.team})}, "spec": pod_spec(c, job)}
    if c.rng.random() < 0.4:
        t["metadata"]["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}
    return t


def workload(kind):
    def build(c, av):
        spec = {}
        if kind != "DaemonSet":
            spec["replicas"] = c.rng.choice([1, 2, 3, 4, 6])
        if kind == "StatefulSet":
            spec["serviceName"] = f"{c.app}-headless"
        # extensions/v1beta1 and apps/v1beta1 default the selector; manifests often omit it.
        if av == "apps/v1" or c.rng.random() < 0.5:
            spec["selector"] = {"matchLabels": c.selector()}
        if kind == "Deployment":
            spec["revisionHistoryLimit"] = 5
            spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
        spec["template"] = template(c)
        if kind == "StatefulSet":
            spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "gp3",
                "resources": {"requests": {"storage": f"{c.rng.choice([10, 20, 50, 100])}Gi"}}}}]
        return {"metadata": c.meta(), "spec": spec}
    return build


def service(c, av):
    port = c.rng.choice([80, 8080, 443])
    s = {"type": c.rng.choice(["ClusterIP"] * 6 + ["LoadBalancer", "NodePort"]), "selector": c.selector(),
         "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}
    if c.rng.random() < 0.3:
        s["ports"].append({"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"})
    return {"metadata": c.meta(), "spec": s}


def configmap(c, av):
    r = c.rng
    data = {"LOG_LEVEL": r.choice(["info", "debug", "warn"]), "cache_ttl": "300", "feature.new-checkout": "false"}
    fmt = r.random()
    if fmt < 0.4:
        data["application.properties"] = "\n".join(
            [f"server.port={r.choice([8080, 9000])}", f"spring.application.name={c.app}",
             f"spring.datasource.url=jdbc:postgresql://db.{c.ns}:5432/{c.app.replace('-', '_')}",
             "spring.datasource.hikari.maximum-pool-size=20", "management.endpoints.web.exposure.include=health,info,prometheus",
             "logging.level.root=INFO", f"app.upstream.timeout={r.randint(1, 30)}s"]) + "\n"
    elif fmt < 0.7:
        data["nginx.conf"] = (
            "worker_processes auto;\nevents {\n  worker_connections 1024;\n}\nhttp {\n  server {\n    listen 8080;\n"
            f"    server_name {c.app}.example.com;\n    location / {{\n      proxy_pass http://127.0.0.1:3000;\n"
            "      proxy_set_header Host $host;\n      proxy_read_timeout 60s;\n    }\n"
            "    location /healthz {\n      return 200 'ok';\n    }\n  }\n}\n")
    else:
        data["config.json"] = json.dumps({"service": c.app, "team": c.team, "limits": {"rps": r.randint(10, 5000)},
                                          "upstreams": [f"http://{w}.{c.ns}:8080" for w in r.sample(WORDS, 3)]}, indent=2)
    return {"metadata": c.meta(f"{c.app}-config"), "data": data}


def secret(c, av):
    r = c.rng
    data = {k: base64.b64encode(("%032x" % r.getrandbits(128)).encode()).decode()
            for k in ["db_password", "api_key", "sentry_dsn", "jwt_secret"][: r.randint(2, 4)]}
    return {"metadata": c.meta(f"{c.app}-secrets"), "type": "Opaque", "data": data}


def ingress(c, av):
    r = c.rng
    host = f"{c.app}.{c.env}.example.com"
    m = c.meta()
    if av == "networking.k8s.io/v1":
        path = {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": c.app, "port": {"number": 80}}}}
        spec = {"ingressClassName": r.choice(["nginx", "alb", "traefik"])}
    else:
        m.setdefault("annotations", {})["kubernetes.io/ingress.class"] = r.choice(["nginx", "alb"])
        path = {"path": "/", "backend": {"serviceName": c.app, "servicePort": 80}}
        spec = {}
    m.setdefault("annotations", {})["nginx.ingress.kubernetes.io/proxy-body-size"] = "8m"
    spec["tls"] = [{"hosts": [host], "secretName": f"{c.app}-tls"}]
    spec["rules"] = [{"host": host, "http": {"paths": [path]}}]
    return {"metadata": m, "spec": spec}


def cronjob(c, av):
    return {"metadata": c.meta(f"{c.app}-nightly", component="batch"), "spec": {
        "schedule": f"{c.rng.randint(0, 59)} {c.rng.randint(0, 23)} * * *", "concurrencyPolicy": "Forbid",
        "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "jobTemplate": {"spec": {"backoffLimit": 2, "template": template(c, job=True)}}}}


def job(c, av):
    return {"metadata": c.meta(f"{c.app}-migrate-{c.rng.randint(1, 999)}", component="batch"),
            "spec": {"backoffLimit": 1, "ttlSecondsAfterFinished": 3600, "template": template(c, job=True)}}


def hpa(c, av):
    r = c.rng
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": c.app}
    spec = {"scaleTargetRef": ref, "minReplicas": r.choice([1, 2, 3]), "maxReplicas": r.choice([6, 10, 20, 50])}
    if av == "autoscaling/v2beta1":
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 70}},
                           {"type": "Resource", "resource": {"name": "memory", "targetAverageUtilization": 80}}]
    else:
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
        if r.random() < 0.5:
            spec["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 300,
                                              "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}}
    return {"metadata": c.meta(), "spec": spec}


def pdb(c, av):
    spec = {"selector": {"matchLabels": c.selector()}}
    if c.rng.random() < 0.5:
        spec["minAvailable"] = 1
    else:
        spec["maxUnavailable"] = "25%"
    return {"metadata": c.meta(), "spec": spec}


def netpol(c, av):
    return {"metadata": c.meta(f"{c.app}-allow-ingress"), "spec": {
        "podSelector": {"matchLabels": c.selector()}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                              {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": c.team}}}],
                     "ports": [{"protocol": "TCP", "port": 8080}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 5432}]},
                   {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}}


def service_account(c, av):
    m = c.meta()
    if c.rng.random() < 0.5:
        m.setdefault("annotations", {})["eks.amazonaws.com/role-arn"] = f"arn:aws:iam::123456789012:role/{c.team}-{c.app}"
    return {"metadata": m, "automountServiceAccountToken": c.rng.random() < 0.5}


RULES = [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list", "watch"]},
         {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]},
         {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]


def role(c, av):
    return {"metadata": c.meta(f"{c.app}-reader"), "rules": RULES[: c.rng.randint(1, 3)]}


def cluster_role(c, av):
    return {"metadata": c.meta(f"{c.team}-{c.app}-reader", namespaced=False), "rules": RULES[: c.rng.randint(1, 3)]}


def role_binding(c, av):
    return {"metadata": c.meta(f"{c.app}-reader"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{c.app}-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": c.app, "namespace": c.ns}]}


def cluster_role_binding(c, av):
    return {"metadata": c.meta(f"{c.team}-{c.app}-reader", namespaced=False),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{c.team}-{c.app}-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": c.app, "namespace": c.ns}]}


def pvc(c, av):
    return {"metadata": c.meta(f"{c.app}-data"), "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gp3",
                                                          "resources": {"requests": {"storage": "20Gi"}}}}


def namespace(c, av):
    return {"metadata": {"name": c.ns, "labels": {"team": c.team, "pod-security.kubernetes.io/enforce": "restricted"}}}


def quota(c, av):
    return {"metadata": c.meta(f"{c.team}-quota"), "spec": {"hard": {"requests.cpu": "20", "requests.memory": "64Gi",
                                                                     "limits.cpu": "40", "pods": "200"}}}


def limit_range(c, av):
    return {"metadata": c.meta(f"{c.team}-defaults"), "spec": {"limits": [
        {"type": "Container", "default": {"cpu": "500m", "memory": "512Mi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]}}


def priority_class(c, av):
    return {"metadata": {"name": f"{c.team}-high"}, "value": 100000, "globalDefault": False,
            "description": f"High priority for {c.team} workloads"}


def service_monitor(c, av):
    return {"metadata": c.meta(), "spec": {"selector": {"matchLabels": c.selector()},
                                           "endpoints": [{"port": "metrics", "interval": "30s", "path": "/metrics"}]}}


def certificate(c, av):
    return {"metadata": c.meta(f"{c.app}-tls"), "spec": {"secretName": f"{c.app}-tls", "dnsNames": [f"{c.app}.example.com"],
                                                        "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}}


def crd(c, av):
    plural = f"{c.app.replace('-', '')}configs"
    group = f"{c.team}.example.com"
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "replicas": {"type": "integer"}, "image": {"type": "string"}, "paused": {"type": "boolean"}}}}}
    spec = {"group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": c.app.title().replace("-", "") + "Config"}}
    if av == "apiextensions.k8s.io/v1":
        spec["versions"] = [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}]
    else:
        spec["version"] = "v1"
        spec["validation"] = {"openAPIV3Schema": schema}
    return {"metadata": {"name": f"{plural}.{group}"}, "spec": spec}


def webhook(kind):
    def build(c, av):
        hook = {"name": f"{c.app}.{c.team}.example.com",
                "clientConfig": {"service": {"name": c.app, "namespace": c.ns, "path": "/validate"}, "caBundle": "LS0tLS1CRUdJTi0tLS0t"},
                "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}],
                "failurePolicy": "Ignore"}
        if av.endswith("/v1"):
            hook["sideEffects"] = "None"
            hook["admissionReviewVersions"] = ["v1"]
        return {"metadata": {"name": f"{c.team}-{c.app}"}, "webhooks": [hook]}
    return build


def flow_schema(c, av):
    return {"metadata": {"name": f"{c.team}-{c.app}"}, "spec": {
        "priorityLevelConfiguration": {"name": "workload-low"}, "matchingPrecedence": 1000,
        "distinguisherMethod": {"type": "ByUser"},
        "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": c.app, "namespace": c.ns}}],
                   "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"]}]}]}}


def priority_level(c, av):
    return {"metadata": {"name": f"{c.team}-low"}, "spec": {"type": "Limited", "limited": {
        "nominalConcurrencyShares" if av.endswith("/v1") else "assuredConcurrencyShares": 10,
        "limitResponse": {"type": "Queue", "queuing": {"queues": 16, "handSize": 4, "queueLengthLimit": 50}}}}}


def psp(c, av):
    return {"metadata": {"name": f"{c.team}-restricted"}, "spec": {
        "privileged": False, "allowPrivilegeEscalation": False, "requiredDropCapabilities": ["ALL"],
        "volumes": ["configMap", "emptyDir", "projected", "secret", "downwardAPI", "persistentVolumeClaim"],
        "hostNetwork": False, "hostIPC": False, "hostPID": False,
        "runAsUser": {"rule": "MustRunAsNonRoot"}, "seLinux": {"rule": "RunAsAny"},
        "supplementalGroups": {"rule": "MustRunAs", "ranges": [{"min": 1, "max": 65535}]},
        "fsGroup": {"rule": "MustRunAs", "ranges": [{"min": 1, "max": 65535}]}, "readOnlyRootFilesystem": False}}


def runtime_class(c, av):
    return {"metadata": {"name": "gvisor"}, "handler": "runsc"}


def csi_driver(c, av):
    return {"metadata": {"name": f"{c.team}.csi.example.com"}, "spec": {"attachRequired": True, "podInfoOnMount": False}}


BUILDERS = {
    "Deployment": workload("Deployment"), "StatefulSet": workload("StatefulSet"), "DaemonSet": workload("DaemonSet"),
    "Service": service, "ConfigMap": configmap, "Secret": secret, "Ingress": ingress, "CronJob": cronjob, "Job": job,
    "HorizontalPodAutoscaler": hpa, "PodDisruptionBudget": pdb, "NetworkPolicy": netpol, "ServiceAccount": service_account,
    "Role": role, "RoleBinding": role_binding, "ClusterRole": cluster_role, "ClusterRoleBinding": cluster_role_binding,
    "PersistentVolumeClaim": pvc, "Namespace": namespace, "ResourceQuota": quota, "LimitRange": limit_range,
    "PriorityClass": priority_class, "ServiceMonitor": service_monitor, "Certificate": certificate,
    "CustomResourceDefinition": crd, "FlowSchema": flow_schema, "PriorityLevelConfiguration": priority_level,
    "ValidatingWebhookConfiguration": webhook("ValidatingWebhookConfiguration"),
    "MutatingWebhookConfiguration": webhook("MutatingWebhookConfiguration"),
    "PodSecurityPolicy": psp, "RuntimeClass": runtime_class, "CSIDriver": csi_driver,
}
CURRENT_AV = {k: v for k, v, _ in CURRENT}
BUNDLES = [
    ["Deployment", "Service"], ["Deployment", "Service", "HorizontalPodAutoscaler"],
    ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"], ["Deployment", "Service", "Ingress"],
    ["ServiceAccount", "Role", "RoleBinding"], ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"],
    ["ConfigMap", "Secret"], ["ConfigMap", "Deployment"], ["ConfigMap", "Deployment", "Service", "Ingress"],
    ["StatefulSet", "Service"], ["StatefulSet", "Service", "PodDisruptionBudget"], ["CronJob", "ConfigMap"],
    ["NetworkPolicy", "NetworkPolicy"], ["Namespace", "ResourceQuota", "LimitRange"], ["Service", "ServiceMonitor"],
    ["Ingress", "Certificate"], ["Deployment", "PodDisruptionBudget"], ["DaemonSet", "ServiceAccount", "ClusterRole"],
]


def weighted(rng, table):
    total = sum(w for *_, w in table)
    x = rng.random() * total
    for row in table:
        x -= row[-1]
        if x < 0:
            return row[:-1]
    return table[-1][:-1]


# ---------------------------------------------------------------------------------------------
# The corpus

class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.files = self.docs = self.deprecated = 0
        self.by_api = {}
        self.truth = []
        self.odd = {"multi": 0, "list": 0, "typedList": 0, "json": 0, "yml": 0, "crlf": 0, "bom": 0,
                    "nonK8s": 0, "helmSource": 0, "emptyDocs": 0, "kindFirst": 0, "quotedApiVersion": 0}

    def pick(self, kind=None):
        """(kind, apiVersion) for one document: ~10% deprecated."""
        if self.rng.random() < DEPRECATED_SHARE:
            if kind:
                options = [(k, v, w) for k, v, w in DEPRECATED if k == kind]
                if options:
                    return weighted(self.rng, options)
            return weighted(self.rng, DEPRECATED)
        if kind:
            return kind, CURRENT_AV[kind]
        return weighted(self.rng, CURRENT)

    def obj(self, c, kind, av):
        body = BUILDERS[kind](c, av)
        head = {"apiVersion": av, "kind": kind}
        if self.rng.random() < 0.02:
            head = {"kind": kind, "apiVersion": av}
            self.odd["kindFirst"] += 1
        return dict(head, **body)

    def count(self, kind, av):
        self.docs += 1
        self.by_api[(av, kind)] = self.by_api.get((av, kind), 0) + 1
        if (kind, av) in DEPRECATED_SET:
            self.deprecated += 1
            return True
        return False

    def yaml_file(self, rel, c, docs, seq_indent):
        """docs: list of (obj, items) where items is None or list of objects (List docs)."""
        r = self.rng
        lines = []
        truth = []
        helm = r.random() < 0.15
        if r.random() < 0.1:
            lines.append("---")
        for i, (obj, items) in enumerate(docs):
            if i > 0:
                lines.append(r.choice(["---"] * 8 + ["--- # next object", "---\n---"]))
                if lines[-1] == "---\n---":
                    self.odd["emptyDocs"] += 1
                    lines[-1:] = ["---", "---"]
            doc_start = len(lines) + 1  # first line of this document
            if helm:
                lines.append(f"# Source: {c.app}/templates/{obj['kind'].lower()}.yaml")
                self.odd["helmSource"] += 1
            elif r.random() < 0.1:
                lines.append(f"# {obj['kind']} for {c.app} ({c.env})")
            body = []
            emit(obj, 0, body, seq_indent)
            if r.random() < 0.03:
                # apiVersion: "..." (quoted)
                body = [l.replace(f"apiVersion: {obj['apiVersion']}", f'apiVersion: "{obj["apiVersion"]}"', 1)
                        if l.startswith("apiVersion: ") else l for l in body]
                self.odd["quotedApiVersion"] += 1
            base = len(lines)
            lines.extend(body)
            key_line = base + 1 + max(i for i, l in enumerate(body[:3]) if l.startswith(("apiVersion:", "kind:")))
            if items is None:
                ranges = [(doc_start, key_line)]
            else:
                # each List item: from its `- ` line to its apiVersion line
                marker = " " * seq_indent + "- "
                first = body.index("items:") + 1
                starts = [j for j in range(first, len(body)) if body[j].startswith(marker)]
                ranges = []
                for j in starts:
                    av = j if body[j][len(marker):].startswith("apiVersion:") else j + 1
                    ranges.append((base + 1 + j, base + 1 + av))
                assert len(ranges) == len(items), (rel, len(ranges), len(items))
            for o, (lo, hi) in zip(items if items is not None else [obj], ranges):
                if self.count(o["kind"], o["apiVersion"]):
                    truth.append({"file": rel, "kind": o["kind"], "apiVersion": o["apiVersion"],
                                  "lineMin": lo, "lineMax": hi, "note": "List item" if items is not None else ""})
            if items is not None:
                self.count(obj["kind"], obj["apiVersion"])  # the List itself (never a deprecated kind)
        if r.random() < 0.05:
            lines.append("---")
        text = "\n".join(lines) + "\n"
        note = ""
        if r.random() < 0.01:
            text = text.replace("\n", "\r\n")
            self.odd["crlf"] += 1
            note = "CRLF"
        if r.random() < 0.004:
            text = "\ufeff" + text
            self.odd["bom"] += 1
            note = (note + " BOM").strip()
        for t in truth:
            t["note"] = (t["note"] + " " + note).strip()
        self.truth.extend(truth)
        return text

    def json_file(self, rel, obj, items):
        for o in (items if items is not None else [obj]):
            if self.count(o["kind"], o["apiVersion"]):
                self.truth.append({"file": rel, "kind": o["kind"], "apiVersion": o["apiVersion"],
                                   "lineMin": 1, "lineMax": 1, "note": "json"})
        if items is not None:
            self.count(obj["kind"], obj["apiVersion"])
        return json.dumps(obj, indent=2 if self.rng.random() < 0.8 else 4) + "\n"

    def list_doc(self, c, typed):
        n = self.rng.randint(2, 4)
        if typed:
            kind, av = self.pick(self.rng.choice(["Deployment", "Ingress", "CronJob", "HorizontalPodAutoscaler"]))
            items = [self.obj(c, kind, av) for _ in range(n)]
            for i, it in enumerate(items):
                it["metadata"]["name"] = f"{c.app}-{i}"
            lst = {"apiVersion": av, "kind": f"{kind}List", "metadata": {"resourceVersion": ""}, "items": items}
        else:
            items = [self.obj(c, *self.pick()) for _ in range(n)]
            lst = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}
        return lst, items

    def run(self, out, nfiles):
        r = self.rng
        used = {}
        teams = TEAMS[: max(1, min(len(TEAMS), nfiles // 800))]
        apps_per_team = max(1, nfiles // (len(teams) * 20))
        written = []
        for i in range(nfiles):
            ti = i % len(teams)
            team = teams[ti]
            ai = (i // len(teams)) % apps_per_team
            app = f"{WORDS[(ai * 7 + ti * 3) % len(WORDS)]}-{ai:03d}"
            env = r.choice(ENVS)
            sub = r.choice(["base", f"overlays/{env}", f"overlays/{env}", "k8s", "deploy", f"charts/{app}/rendered", "manifests"])
            c = Ctx(r, team, app, env)
            x = r.random()
            ext = "yml" if r.random() < 0.15 else "yaml"
            if x < 0.015:
                kind = "json"
            elif x < 0.035:
                kind = "list"
            elif x < 0.335:
                kind = "multi"
            elif x < 0.355:
                kind = "nonk8s"
            else:
                kind = "single"
            seq_indent = 0 if r.random() < 0.6 else 2
            if kind == "json":
                ext = "json"
                if r.random() < 0.3:
                    obj, items = self.list_doc(c, typed=False)
                    stem = "list"
                else:
                    obj, items = self.obj(c, *self.pick()), None
                    stem = obj["kind"].lower()
            elif kind == "list":
                typed = r.random() < 0.15
                obj, items = self.list_doc(c, typed)
                docs = [(obj, items)]
                stem = "all-objects" if not typed else obj["kind"].lower()
                self.odd["typedList" if typed else "list"] += 1
            elif kind == "multi":
                plan = list(r.choice(BUNDLES))
                n = r.randint(2, 4)
                while len(plan) < n:
                    plan.append(weighted(r, CURRENT)[0])
                docs = [(self.obj(c, *self.pick(k)), None) for k in plan]
                stem = r.choice(["app", "all", "resources", "bundle", app])
                self.odd["multi"] += 1
            elif kind == "single":
                obj = self.obj(c, *self.pick())
                docs = [(obj, None)]
                stem = obj["kind"].lower()
            d = os.path.join(f"team-{team}", f"app-{app}", sub)
            if kind == "nonk8s":
                if r.random() < 0.5:
                    stem, ext = "kustomization", "yaml"
                    body = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                            "namespace": c.ns, "resources": ["deployment.yaml", "service.yaml"],
                            "commonLabels": {"team": team}, "images": [{"name": app, "newTag": f"1.{r.randint(0, 40)}.0"}]}
                else:
                    stem, ext = "values", "yaml"
                    body = {"replicaCount": 2, "image": {"repository": f"registry.example.com/{team}/{app}", "tag": "latest"},
                            "service": {"type": "ClusterIP", "port": 80}, "ingress": {"enabled": True, "hosts": [f"{app}.example.com"]},
                            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}}
                lines = []
                emit(body, 0, lines, seq_indent)
                text = "\n".join(lines) + "\n"
                self.odd["nonK8s"] += 1
            name = f"{stem}.{ext}"
            key = (d, name)
            if key in used:
                used[key] += 1
                name = f"{stem}-{used[key]}.{ext}"
            else:
                used[key] = 1
            rel = os.path.join(d, name)
            if kind == "json":
                text = self.json_file(rel, obj, items)
                self.odd["json"] += 1
            elif kind != "nonk8s":
                text = self.yaml_file(rel, c, docs, seq_indent)
            if ext == "yml":
                self.odd["yml"] += 1
            path = os.path.join(out, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            self.files += 1
            written.append(len(text.encode()))
        # a README per team: not a manifest (pluto reads every file; lifeboat skips it)
        for team in teams:
            with open(os.path.join(out, f"team-{team}", "README.md"), "w") as f:
                f.write(f"# {team}\n\nManifests for the {team} team. Owners: {team}@example.com\n")
        return written


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output directory (created; should be empty)")
    p.add_argument("--files", type=int, default=20000, help="number of manifest files (default 20000)")
    p.add_argument("--seed", type=int, default=20251127, help="random seed (default fixed)")
    p.add_argument("--truth", help="write the deprecated objects as JSON ground truth here (outside OUT)")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if any(os.scandir(a.out)):
        sys.exit(f"gen-manifests: {a.out} is not empty")
    g = Gen(a.seed)
    sizes = g.run(a.out, a.files)
    total = sum(sizes)
    print(f"generated {g.files} files, {g.docs} Kubernetes objects (documents, List items and Lists), {g.deprecated} with a deprecated/removed apiVersion "
          f"({100.0 * g.deprecated / max(1, g.docs):.1f}%), {total / 1e6:.1f} MB (mean {total / max(1, g.files) / 1024:.1f} KiB/file)")
    print("  files: " + ", ".join(f"{k} {v}" for k, v in g.odd.items()))
    dep = sorted(((n, av, k) for (av, k), n in g.by_api.items() if (k, av) in DEPRECATED_SET), key=lambda t: (-t[0], t[1], t[2]))
    print("  deprecated: " + ", ".join(f"{av} {k} {n}" for n, av, k in dep))
    if a.truth:
        with open(a.truth, "w") as f:
            json.dump(g.truth, f)


if __name__ == "__main__":
    main()
